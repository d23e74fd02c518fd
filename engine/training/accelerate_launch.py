"""``sert-tui run CONFIG --stage self-train --launcher accelerate``: re-run the stage under ``accelerate launch``.

The argv is built as a list (never a shell string) and re-invokes ``python -m sert_tui --db W run CONFIG
--stage X`` in every process; inside, :mod:`engine.training.accelerate_engine` trains on every rank while rank 0
alone owns the workspace and reports its result to the launching process, which prints it (text, or one JSON
document with ``--json``). Presets (``ddp``, ``fsdp``, ``deepspeed_zero2``, ``deepspeed_zero3``) are accelerate
config files shipped in ``engine/accelerate_presets``; ``--accelerate-config`` takes a preset name or a file.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.errors import UserError
from db.vocabulary import TRAINING_KINDS

PRESETS_DIR = Path(__file__).resolve().parent.parent / "accelerate_presets"
PRESETS = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
DEFAULT_PRESET = "ddp"
#: Environment variable naming the file where rank 0 of a launched run writes its result (jobs, error).
RESULT_ENV = "SERT_TUI_RESULT_FILE"


@dataclass(frozen=True)
class LaunchOptions:
    num_processes: int = 1
    accelerate_config: str | None = None  # preset name or file; None: the ddp preset
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def resolve_accelerate_config(value: str | None) -> Path:
    """A preset name (``ddp``, ``fsdp``, ...) or the path of an accelerate config file."""
    if value is None:
        value = DEFAULT_PRESET
    if value in PRESETS:
        return preset_path(value)
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"--accelerate-config: {value!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    return path.resolve()


def validate(stage: str, opts: LaunchOptions) -> None:
    if stage not in TRAINING_KINDS:
        raise UserError(f"--launcher accelerate runs a training stage ({', '.join(TRAINING_KINDS)}), not {stage!r}")
    if opts.num_processes < 1:
        raise UserError("--num-processes must be at least 1")
    if opts.num_machines < 1:
        raise UserError("--num-machines must be at least 1")
    if not 0 <= opts.machine_rank < opts.num_machines:
        raise UserError(f"--machine-rank must be between 0 and {opts.num_machines - 1}")
    if opts.num_processes < opts.num_machines:
        raise UserError("--num-processes counts the processes of all machines: at least one per machine")
    if opts.num_machines > 1 and (not opts.main_process_ip or not opts.main_process_port):
        raise UserError("a multi-node run needs --main-process-ip and --main-process-port (rank 0's address)")


def accelerate_argv(
    workspace: Path, config: Path, stage: str, opts: LaunchOptions, python: str | None = None
) -> list[str]:
    """The ``accelerate launch`` command line; every process runs ``python -m sert_tui --db W run CONFIG
    --stage X``. ``--num-processes`` is the total over all machines (accelerate's meaning)."""
    validate(stage, opts)
    argv = [
        python or sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(resolve_accelerate_config(opts.accelerate_config)),
        "--num_processes",
        str(opts.num_processes),
        "--num_machines",
        str(opts.num_machines),
        "--machine_rank",
        str(opts.machine_rank),
    ]
    if opts.main_process_ip:
        argv += ["--main_process_ip", opts.main_process_ip]
    if opts.main_process_port:
        argv += ["--main_process_port", str(opts.main_process_port)]
    argv += [
        "--module",
        "sert_tui",
        "--db",
        str(Path(workspace).resolve()),
        "run",
        str(Path(config).resolve()),
        "--stage",
        stage,
    ]
    return argv


@dataclass(frozen=True)
class LaunchResult:
    returncode: int  # of ``accelerate launch`` (torchrun reports any failed rank as 1)
    result: dict[str, Any] | None  # what rank 0's ``run`` reported (see :data:`RESULT_ENV`); None if it did not


def launch(workspace: Path, config: Path, stage: str, opts: LaunchOptions) -> LaunchResult:
    """Run the stage under ``accelerate launch``. Everything the processes print goes to this process's stderr
    (progress, logs, accelerate's own messages); rank 0 reports its jobs (and error) through a file named by
    :data:`RESULT_ENV`, so the caller prints the one result, as text or as one JSON document."""
    argv = accelerate_argv(workspace, config, stage, opts)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, opts.num_processes))))
    with tempfile.TemporaryDirectory(prefix="sert-tui-launch-") as folder:  # owner-only (mode 0o700)
        result_file = Path(folder) / "result.json"
        env[RESULT_ENV] = str(result_file)
        code = _run_to_stderr(argv, env)
        return LaunchResult(code, read_result(result_file))


def _run_to_stderr(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` with its stdout forwarded to ``sys.stderr`` as it comes (stderr is inherited)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            sys.stderr.write(decoder.decode(chunk))
            sys.stderr.flush()
        sys.stderr.write(decoder.decode(b"", final=True))
        return proc.wait()


def read_result(file: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_result(result: dict[str, Any]) -> bool:
    """Inside a launched process: hand rank 0's result to the launching ``run`` (True), or nothing to do when
    this process was not started by :func:`launch` (False)."""
    target = os.environ.get(RESULT_ENV)
    if not target:
        return False
    from engine.files import write_private

    write_private(Path(target), json.dumps(result, default=str))
    return True
