"""Starting job processes for the app, and the embedded default job.

A job runs in its own process (``sert-tui --db W run CONFIG --stage NAME``), started in a new session so that
it survives the app and never receives the terminal's signals; its output goes to a log file beside the
workspace. The app keeps the ``Launch`` records of what it started: a job whose ``pid`` is one of them was
started by this app, every other job is headless and is never touched when the app closes.

Several stages in one process (a form's chain) go through this module's own entry point, ``python -m
engine.pipeline.processes``, which runs the stages in turn on the same engine as ``sert-tui run``. The embedded
default is ``sert-tui run --default`` (engine.pipeline.rounds): the whole loop, as headless.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from db.vocabulary import DEFAULT_STAGES, STAGE_NAMES
from engine.data.generate import DEFAULT_TASK
from engine.files import open_private_append, private_dir, write_private

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


DEFAULT_DATASET = DEFAULT_TASK
DEFAULT_TRAIN, DEFAULT_TEST, DEFAULT_SEED = 32, 40, 0
#: Sizes of the embedded default loop (sample → filter → self-train → eval beside zero-shot), chosen to finish in
#: one to three minutes on a 2-core CPU (67 s with bf16, docs/usage.md): the paper's sampling with fewer questions
#: and tokens, and the selection study's best lever (docs/results.md): the perplexity threshold fitted to this
#: student (2.2, not the paper's 5, which removes most of an instruct model's paths) and ``require_correct`` (keep
#: only paths whose answer is the gold one, STaR/RFT rejection sampling), the paper's rule (lowest rep-2) choosing.
DEFAULT_CONFIG: dict = {
    "name": "default",
    "student": {"model": "default", "device": "auto"},
    "data": {"dataset": DEFAULT_DATASET, "split": "train", "train_limit": 24, "test_limit": DEFAULT_TEST},
    "sampling": {"max_new_tokens": 48},
    "filters": {"min_perplexity": 2.2, "require_correct": True},
    "train": {"epochs": 2.0, "max_steps": 20},
    "eval": {"max_new_tokens": 64},
}


def default_config_path(workspace: Path) -> Path:
    """The default job's config lives beside the workspace; edit it to change what `d` starts."""
    workspace = Path(workspace)
    return workspace.with_name(workspace.stem + ".default.toml")


def logs_dir(workspace: Path) -> Path:
    workspace = Path(workspace)
    return workspace.with_name(workspace.stem + ".logs")


def configs_dir(workspace: Path) -> Path:
    workspace = Path(workspace)
    return workspace.with_name(workspace.stem + ".configs")


def render_config(values: dict) -> str:
    import tomli_w

    from engine.config import config_from_dict

    config_from_dict(values)  # refuse a bad form before anything is written
    return "# written by sert-tui; every key left out takes the paper's default\n" + tomli_w.dumps(values)


def ensure_default_config(workspace: Path) -> Path:
    """Write the default job's config unless the person already has one there."""
    path = default_config_path(workspace)
    if not path.exists():
        write_private(path, render_config(DEFAULT_CONFIG))
    return path


def write_form_config(workspace: Path, values: dict) -> Path:
    """Save a config made in the app's form, under ``<workspace>.configs/``."""
    folder = private_dir(configs_dir(workspace))
    name = str(values.get("name") or "experiment")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "experiment"
    path = folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}.toml"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.toml"
    return write_private(path, render_config(values))


def dataset_task(name: str, tasks: Sequence[str]) -> str:
    """The reasoning-gym task the default loop generates for a dataset name."""
    return name if name in tasks else DEFAULT_TASK


def ensure_dataset(database: Engine, name: str = DEFAULT_DATASET) -> str | None:
    """Generate the default dataset if the workspace lacks it; the task it generated, or None. A name that is a
    reasoning-gym task (``data.dataset = "letter_counting"`` in the default config) generates that task, any
    other name the default task."""
    from sqlmodel import select

    from db.models import Dataset
    from db.queries import save_dataset
    from db.session import session_scope
    from engine.data.generate import available_tasks, generate

    with session_scope(database) as s:
        if s.exec(select(Dataset.id).where(Dataset.name == name)).first() is not None:
            return None
    task = dataset_task(name, available_tasks())
    spec = generate(name, task, DEFAULT_TRAIN, DEFAULT_TEST, DEFAULT_SEED)
    with session_scope(database) as s:
        if s.exec(select(Dataset.id).where(Dataset.name == name)).first() is not None:
            return None  # another process generated it meanwhile
        save_dataset(s, spec)
    return task


#: Set in the environment of every job process the app starts (:class:`Launcher`): the app stops such a process
#: with SIGINT (:meth:`Launch.interrupt`), so the process takes SIGINT as Ctrl-C whatever it inherited.
LAUNCHED_ENV = "SERT_TUI_LAUNCHED"
#: The folder that holds the ``sert_tui``, ``engine`` and ``db`` packages: a job process's working directory and
#: import path, so that it runs this code.
CHECKOUT = Path(__file__).resolve().parents[2]


def take_interrupts() -> None:
    """In a job process the app started, make SIGINT raise KeyboardInterrupt (a running stage then records itself
    as cancelled). An app started with SIGINT ignored (a non-interactive shell's ``cmd &``, a test runner's worker)
    passes that on to its children, and Python then installs no handler: the app's interrupt was lost and the job
    ran on. Called first thing by the job process's entry points."""
    if os.environ.get(LAUNCHED_ENV) == "1":
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)


def job_environment() -> dict[str, str]:
    """The environment of a job process the app starts: this checkout importable, unbuffered output, and
    :data:`LAUNCHED_ENV`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[LAUNCHED_ENV] = "1"
    return env


@dataclass
class Launch:
    """A job process this app started."""

    pid: int
    stages: tuple[str, ...]
    config: Path
    log: Path
    started: float
    process: subprocess.Popen = field(repr=False)
    default: bool = False  # the embedded default loop (``run --default``)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None

    def interrupt(self) -> None:
        """Ctrl-C for the job process: a running stage records itself as cancelled."""
        import signal

        if self.running:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def last_line(self) -> str:
        try:
            with self.log.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4096))
                lines = fh.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()
        except OSError:
            return ""
        lines = [ln for ln in lines if ln.strip()]
        return lines[-1] if lines else ""

    def log_text(self, limit: int = 200_000) -> str:
        try:
            data = self.log.read_bytes()
        except OSError as exc:
            return f"(no log: {exc})"
        return data[-limit:].decode("utf-8", "replace")


def command_for(workspace: Path, config: Path, stages: Sequence[str], *, default: bool = False) -> list[str]:
    """The command line of a job process: the real CLI for one stage and for the default loop (``run
    --default``, which reads ``config``, the default config beside the workspace), this module for a chain."""
    cli = [sys.executable, "-m", "sert_tui", "--db", str(workspace), "run"]
    if default:
        return [*cli, "--default"]
    if len(stages) == 1:
        return [*cli, str(config), "--stage", stages[0]]
    cmd = [sys.executable, "-m", "engine.pipeline.processes", "--db", str(workspace), "--config", str(config)]
    for name in stages:
        cmd += ["--stage", name]
    return cmd


class Launcher:
    """Starts job processes and remembers them for the lifetime of the app."""

    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self.launches: list[Launch] = []

    def start(self, config: Path, stages: Sequence[str], *, default: bool = False) -> Launch:
        stages = tuple(stages)
        for name in stages:
            if name not in STAGE_NAMES:
                raise ValueError(f"unknown stage {name!r}")
        folder = private_dir(logs_dir(self.workspace))
        log = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{'+'.join(stages)}-{len(self.launches)}.log"
        cmd = command_for(self.workspace, Path(config), stages, default=default)
        env = job_environment()
        with open_private_append(log) as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the app, never gets the terminal's Ctrl-C
                cwd=str(CHECKOUT),
                env=env,
            )
        launch = Launch(proc.pid, stages, Path(config), log, time.time(), proc, default)
        self.launches.append(launch)
        return launch

    def start_default(self) -> Launch:
        """The embedded default loop (``sert-tui run --default``): the bundled student on a generated dataset,
        sample → filter → self-train → eval beside the zero-shot base model."""
        config = ensure_default_config(self.workspace)
        return self.start(config, DEFAULT_STAGES, default=True)

    def default_launch(self) -> Launch | None:
        """The newest default loop this app started, if any."""
        config = default_config_path(self.workspace)
        return next((la for la in reversed(self.launches) if la.config == config and la.default), None)

    @property
    def pids(self) -> set[int]:
        return {launch.pid for launch in self.launches}

    def running(self) -> list[Launch]:
        return [launch for launch in self.launches if launch.running]

    def started_job(self, pid: int | None, host: str) -> bool:
        """Whether a job row (by its pid and host) belongs to a process this app started."""
        import socket

        return pid is not None and pid in self.pids and (not host or host == socket.gethostname())

    def wait(self, timeout: float | None = None) -> None:
        for launch in self.launches:
            try:
                launch.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass


def cancel_job(database: Engine, job_id: int) -> None:
    """Ask a job to stop at its next check; finished work is kept."""
    from engine.jobs import request_cancel

    request_cancel(database, job_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Run several stages in one process: ``python -m engine.pipeline.processes --db W --config C --stage S ...``."""
    parser = argparse.ArgumentParser(prog="python -m engine.pipeline.processes")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--stage", action="append", required=True, choices=STAGE_NAMES)
    args = parser.parse_args(argv)

    from db.errors import UserError
    from db.session import open_workspace
    from engine.config import load_config
    from engine.pipeline import run_stage

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        config = load_config(args.config)
        database = open_workspace(args.db)
        for name in args.stage:
            jobs = run_stage(database, config, name, echo)
            for job in jobs:
                print(f"job {job.id} {job.kind}: {job.status}", flush=True)
            if not all(j.status == "completed" for j in jobs):
                return 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    take_interrupts()
    raise SystemExit(main())
