"""Real-process helpers of the reliability suite: run ``sert-tui`` as a subprocess, kill it with SIGKILL at
seeded random moments, resume it, and check the workspace for duplicated or lost rows.

Nothing here is mocked: every run is ``.venv/bin/sert-tui --db W run CONFIG --stage X`` on a real SQLite file.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability import stats

ROOT = Path(__file__).resolve().parents[2]
SERT = Path(sys.executable).parent / "sert-tui"

#: The unique key of every table that has one (GROUP BY key HAVING COUNT(*) > 1 must be empty), plus the
#: identities that have no constraint but must not double either (one job per stage fingerprint, one
#: evaluation per job and model).
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "paths": ("job_id", "question_id", "source", "branch", "sample"),
    "metrics": ("job_id", "step", "name"),
    "job_items": ("job_id", "question_id"),
    "checkpoints": ("job_id", "step"),
    "predictions": ("evaluation_id", "question_id"),
    "teacher_responses": ("key",),
    "questions": ("dataset_id", '"index"'),
    "jobs": ("kind", "fingerprint"),
    "evaluations": ("job_id", "model_ref", "dataset_id", "split"),
}


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child process: offline, one thread (two shared cores), unbuffered output."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "0",
    }
    env.update(extra)
    return env


def cli(db: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``sert-tui --db DB ARGS...`` to the end; text output captured."""
    return subprocess.run(
        [str(SERT), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        cwd=str(ROOT),
        check=False,
    )


def launch(db: Path, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``sert-tui --db DB ARGS...`` with its output going to ``log``."""
    fh = log.open("ab")
    try:
        return subprocess.Popen(
            [str(SERT), "--db", str(db), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
            cwd=str(ROOT),
            start_new_session=True,
        )
    finally:
        fh.close()


# -- the workspace seen from outside --------------------------------------------------------------------------
def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(str(db), timeout=60)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def copy_workspace(src: Path, dst: Path) -> Path:
    """A consistent copy of a workspace (SQLite's backup API: the WAL's committed frames included)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    source = sqlite3.connect(str(src), timeout=60)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(dst, 0o600)
    return dst


def table_counts(db: Path) -> dict[str, int]:
    tables = [r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {t: query(db, f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in tables}


def table_state(db: Path) -> dict[str, tuple[int, str]]:
    """Per table: its row count and a hash of every row (in rowid order) -- "unchanged" means the same rows with
    the same values, not only as many of them."""
    import hashlib

    out = {}
    for table, count in table_counts(db).items():
        digest = hashlib.sha256()
        for row in query(db, f'SELECT * FROM "{table}" ORDER BY rowid'):
            digest.update(repr(row).encode("utf-8", "surrogatepass"))
        out[table] = (count, digest.hexdigest()[:16])
    return out


def duplicates(db: Path) -> dict[str, list[tuple]]:
    """Rows whose unique key appears more than once, per table (empty when all is well)."""
    present = {r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    out: dict[str, list[tuple]] = {}
    for table, key in UNIQUE_KEYS.items():
        if table not in present:
            continue
        cols = ", ".join(key)
        where = " WHERE fingerprint != ''" if table == "jobs" else ""
        rows = query(db, f"SELECT {cols}, COUNT(*) FROM {table}{where} GROUP BY {cols} HAVING COUNT(*) > 1")
        if rows:
            out[table] = rows
    return out


def job_of_pid(db: Path, pid: int) -> tuple | None:
    """(id, kind, status, progress_done, progress_total) of the newest job the process ``pid`` runs."""
    try:
        rows = query(
            db,
            "SELECT id, kind, status, progress_done, progress_total FROM jobs WHERE pid = ? ORDER BY id DESC LIMIT 1",
            (pid,),
        )
    except sqlite3.OperationalError:  # the child is creating the schema
        return None
    return rows[0] if rows else None


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- kill -9 and resume -----------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """One stage under the kill test.

    ``prepare`` makes a fresh workspace at ``db`` (the start of a cycle); ``between`` runs after every kill
    (a person's decisions, checks of the half-done state); ``verify`` checks a finished cycle against an
    uninterrupted run. ``anchor``: ``"job"`` draws the kill moment after the process has started its job row
    (so kills land in the work, not in Python's start-up); ``"progress"`` first waits until the job reports a
    seeded random number of its items done (so kills land after, between and inside items, and the person
    has finished items to decide on), then draws within about one item's time; ``"launch"`` draws from the
    start of the process (stages whose whole job lasts a fraction of a second). ``work_s``: how long the
    uninterrupted run took from the anchor to its end; a kill is drawn uniformly in the part of it that is left
    (by the job's progress).
    """

    stage: str
    db: Path
    config: Path
    logdir: Path
    work_s: float
    anchor: str = "job"
    prepare: Callable[[], None] = lambda: None
    between: Callable[[random.Random], None] = lambda _rng: None
    verify: Callable[[], None] = lambda: None
    env: dict[str, str] | None = None
    extra_args: list[str] = field(default_factory=list)


@dataclass
class KillReport:
    landed: int = 0  # kills that hit a live process
    attempts: int = 0
    cycles: int = 1  # workspaces taken from scratch to the end (a cycle ends when the job completes)
    delays: list[float] = field(default_factory=list)


def _wait_anchor(
    proc: subprocess.Popen, db: Path, timeout: float = 600, rng: random.Random | None = None
) -> tuple | None:
    """The job row once the process runs it (and, with ``rng``, has done a random number of its items)."""
    deadline = time.monotonic() + timeout
    target: int | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        job = job_of_pid(db, proc.pid)
        if job is not None and job[2] == "running":
            if rng is None:
                return job
            if job[4]:  # the total is known: wait for a random item count below it
                if target is None:
                    target = rng.randint(job[3], job[4] - 1) if job[3] < job[4] else job[3]
                if job[3] >= target:
                    return job
        time.sleep(0.05)
    raise AssertionError(f"the job process {proc.pid} did not start its job in {timeout:.0f} s")


def _remaining_fraction(job: tuple | None) -> float:
    if job is None or not job[4]:
        return 1.0
    return max(0.15, 1.0 - job[3] / job[4])


def run_args(s: Scenario) -> list[str]:
    return ["run", str(s.config), "--stage", s.stage, *s.extra_args]


def run_to_end(s: Scenario, name: str, timeout: float = 900) -> subprocess.Popen:
    log = s.logdir / f"{name}.log"
    proc = launch(s.db, run_args(s), log, s.env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{s.stage}: the run did not finish in {timeout:.0f} s\n{log_tail(log)}") from None
    assert proc.returncode == 0, f"{s.stage}: exit {proc.returncode}\n{log_tail(log)}"
    return proc


def timed_reference(s: Scenario, name: str = "reference") -> float:
    """Run the stage uninterrupted; returns the seconds from the anchor (see ``Scenario``) to the end."""
    log = s.logdir / f"{name}.log"
    t0 = time.monotonic()
    proc = launch(s.db, run_args(s), log, s.env)
    if s.anchor in ("job", "progress"):
        _wait_anchor(proc, s.db)
        t0 = time.monotonic()
    proc.wait(timeout=900)
    assert proc.returncode == 0, f"{s.stage} reference run: exit {proc.returncode}\n{log_tail(log)}"
    return time.monotonic() - t0


def kill_and_resume(s: Scenario, kills: int, seed: int) -> KillReport:
    """Kill the stage's process with SIGKILL ``kills`` times at seeded random moments, resuming it each time,
    then let it finish and ``verify``. A run that ends by itself before the kill (the job is complete) ends
    the cycle: it is verified and a fresh workspace starts the next cycle, until ``kills`` kills have landed.
    """
    rng = random.Random(seed)
    report = KillReport()
    s.prepare()
    while report.landed < kills:
        report.attempts += 1
        assert report.attempts <= 3 * kills + 5, f"{s.stage}: too few kills landed ({report.landed}/{kills})"
        log = s.logdir / f"attempt-{report.attempts}.log"
        proc = launch(s.db, run_args(s), log, s.env)
        job = None
        if s.anchor == "job":
            job = _wait_anchor(proc, s.db)
        elif s.anchor == "progress":
            job = _wait_anchor(proc, s.db, rng=rng)
        if s.anchor == "progress" and job is not None and job[4]:
            window = s.work_s / (job[4] + 1)  # about one item (the start-up is part of work_s)
        else:
            window = s.work_s * _remaining_fraction(job)
        # the last quarter is left out: a run faster than the reference would end before the kill
        delay = rng.uniform(0.0, 0.75 * window)
        report.delays.append(round(delay, 2))
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            report.landed += 1
            stats.kills[s.stage] += 1
            assert not duplicates(s.db), f"{s.stage}: duplicated rows after kill {report.landed}"
            s.between(rng)
            continue
        # It finished before the kill: the job is complete. Verify this cycle and start a fresh one.
        assert proc.returncode == 0, f"{s.stage}: exit {proc.returncode}\n{log_tail(log)}"
        s.verify()
        report.cycles += 1
        s.prepare()
    run_to_end(s, "final")
    s.verify()
    return report
