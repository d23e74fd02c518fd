"""Job rows and the context a running stage writes through.

A job is a row with a frozen copy of its config. The process running it is its only writer; it records
progress, log events and metrics so that the app (another process) can watch. A job whose config
fingerprint matches an unfinished one resumes that job instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import select

if TYPE_CHECKING:
    from engine.config import ExperimentConfig

from db.errors import UserError
from db.models import Dataset, Job, JobEvent, Metric, utcnow
from db.session import session_scope

ACTIVE = ("pending", "running")
FINISHED = ("completed", "failed", "cancelled")
#: Progress is written and echoed at most this often (and always at the end): a few times a second.
PROGRESS_EVERY_S = 0.25


class JobCancelled(Exception):
    """Raised inside a stage when the job was asked to stop; the stage's finished work stays."""


def fingerprint(kind: str, parts: dict[str, Any]) -> str:
    """Stable hash of what defines a job's result (kind, inputs, the config sections it reads)."""
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_job(database: Engine, kind: str, fp: str) -> Job | None:
    """The newest job of ``kind`` with fingerprint ``fp``, whatever its status: a completed one is reused, and a
    failed, cancelled or killed one is resumed (its finished work is kept, not redone)."""
    with session_scope(database) as s:
        return s.exec(
            select(Job).where(Job.kind == kind, Job.fingerprint == fp).order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def refuse_if_running_elsewhere(job: Job) -> None:
    """A job marked running whose process is alive on this machine is not resumed a second time: two
    processes would write the same job's paths and checkpoints. (A killed job's row still says running; its
    process is gone, so it is resumed. Another machine's processes cannot be checked from here.)"""
    if job.status != "running" or not job.pid or job.pid == os.getpid() or job.host != socket.gethostname():
        return
    if pid_alive(job.pid):
        from db.errors import UserError

        raise UserError(
            f"job {job.id} {job.kind} is already running (pid {job.pid} on {job.host}): wait for it to finish, "
            f"or stop it with `sert-tui jobs cancel {job.id}`"
        )


def create_job(
    database: Engine,
    kind: str,
    config: dict[str, Any],
    *,
    fp: str = "",
    dataset_id: int | None = None,
    parent_id: int | None = None,
    label: str = "",
) -> Job:
    with session_scope(database) as s:
        job = Job(kind=kind, config=config, fingerprint=fp, dataset_id=dataset_id, parent_id=parent_id, label=label)
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def request_cancel(database: Engine, job_id: int) -> None:
    with session_scope(database) as s:
        job = s.get(Job, job_id)
        if job is not None and job.status in ACTIVE:
            job.cancel_requested = True


class JobContext:
    """What a running stage uses to report: progress with rate and ETA, log lines, metrics, cancellation."""

    def __init__(self, database: Engine, job_id: int, echo: Callable[[str], None] | None = None):
        self.engine = database
        self.job_id = job_id
        self.echo = echo or (lambda _line: None)
        self._created = time.monotonic()
        self._t0 = self._created
        self._done0: int | None = None
        self._unit: str | None = None  # the unit of the count the rate is of
        self._last_call = self._created  # when progress was last reported (any unit)
        self._last_progress = 0.0
        #: Where else the metrics go (``[log] report_to``: TensorBoard, trackio); closed when the job ends.
        self.trackers: list[Any] = []

    def track(self, tracker: Any) -> None:
        """Send every later :meth:`metrics` call to ``tracker`` too (``log(step, values)``, ``close()``)."""
        self.trackers.append(tracker)

    def close_trackers(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            job.status = "running"
            job.started_at = job.started_at or utcnow()
            job.heartbeat_at = utcnow()
            job.pid = os.getpid()
            job.host = socket.gethostname()
            job.error = None
            job.cancel_requested = False
            job.finished_at = None

    def finish(self, status: str = "completed", error: str | None = None, summary: dict | None = None) -> None:
        self.close_trackers()
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            job.status = status
            job.error = error
            job.finished_at = utcnow()
            job.heartbeat_at = utcnow()
            if summary:
                job.summary = {**job.summary, **summary}

    def update_summary(self, **values: Any) -> None:
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            job.summary = {**job.summary, **values}

    def check_cancel(self) -> None:
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            if job is not None and job.cancel_requested:
                raise JobCancelled(f"job {self.job_id} cancelled")

    # -- reporting -------------------------------------------------------------------------------------
    def log(self, message: str, level: str = "info") -> None:
        self.echo(message)
        with session_scope(self.engine) as s:
            s.add(JobEvent(job_id=self.job_id, level=level, message=message))

    def progress(self, done: int, total: int, unit: str = "items", extra: str = "", force: bool = False) -> str:
        """Record done/total with rate and ETA; rate-limited to a few writes a second unless forced."""
        now = time.monotonic()
        if self._unit is not None and unit != self._unit:
            # another count (paths scored, then questions): its rate from where the last count ended
            self._done0, self._created = None, self._last_call
        self._unit, self._last_call = unit, now
        if self._done0 is None and done >= total > 0:  # all the work came before the first report (the filter's
            self._done0, self._t0 = 0, self._created  # one transaction): its rate is over the whole run
        elif self._done0 is None:
            self._done0 = done
            self._t0 = now
        elapsed = max(now - self._t0, 1e-9)
        rate = (done - self._done0) / elapsed
        eta = (total - done) / rate if rate > 0 else None
        eta_text = _fmt_seconds(eta) if eta is not None else "?"
        line = f"{done}/{total} {unit}, {rate:.2f} {unit}/s, ETA {eta_text}" + (f", {extra}" if extra else "")
        if force or now - self._last_progress >= PROGRESS_EVERY_S or done >= total:
            self._last_progress = now
            with session_scope(self.engine) as s:
                job = s.get(Job, self.job_id)
                assert job is not None
                job.progress_done = done
                job.progress_total = total
                job.message = line
                job.heartbeat_at = utcnow()
            self.echo(line)
        return line

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Write metrics of one step; re-writing a step (after a resume) replaces its values."""
        from sqlalchemy.dialects.sqlite import insert

        rows = [
            {"job_id": self.job_id, "step": step, "name": k, "value": float(v), "time": utcnow()}
            for k, v in values.items()
        ]
        if not rows:
            return
        stmt = insert(Metric).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "step", "name"], set_={"value": stmt.excluded.value, "time": stmt.excluded.time}
        )
        with session_scope(self.engine) as s:
            s.exec(stmt)  # type: ignore[call-overload]
        for tracker in self.trackers:  # the same steps, names and values as the rows
            tracker.log(step, {row["name"]: row["value"] for row in rows})


def _fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


#: Ids of the jobs :func:`run_job` ran in this process, in order (``run --json`` reports them when a stage fails).
RUN_HISTORY: list[int] = []


def run_job(ctx: JobContext, body: Callable[[JobContext], dict | None]) -> str:
    """Run ``body`` as the job's work and record how it ended; returns the final status."""
    RUN_HISTORY.append(ctx.job_id)
    ctx.start()
    try:
        summary = body(ctx)
    except JobCancelled:
        ctx.log("cancelled; finished work is kept", level="warning")
        ctx.finish("cancelled")
        return "cancelled"
    except KeyboardInterrupt:
        ctx.finish("cancelled", error="interrupted")
        raise
    except Exception as exc:
        ctx.finish("failed", error=f"{exc.__class__.__name__}: {exc}")
        raise
    ctx.finish("completed", summary=summary or None)
    return "completed"


# -- finding the job a stage runs -------------------------------------------------------------------------
def config_dataset(database: Engine, config: ExperimentConfig) -> Dataset:
    """The dataset ``data.dataset`` names; a clear error when it is empty or unknown."""
    from db.queries import get_dataset

    if not config.data.dataset:
        raise UserError("data.dataset is empty: name a dataset of the workspace (sert-tui data list)")
    with session_scope(database) as s:
        return get_dataset(s, config.data.dataset)


def reload_job(database: Engine, job_id: int) -> Job:
    with session_scope(database) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def find_or_create_job(
    database: Engine,
    kind: str,
    fp: str,
    config: ExperimentConfig,
    echo: Callable[[str], None],
    *,
    reuse_completed: Callable[[Job], bool] | None = None,
    **create_kwargs: Any,
) -> tuple[Job, bool]:
    """The job to run for ``(kind, fp)`` and whether it is already done.

    An unfinished job with the fingerprint (failed, cancelled, or killed and still marked running) is resumed,
    unless its process still runs; a completed one is returned as done (unless
    ``reuse_completed`` says otherwise, then a new job is created); otherwise a new job is created.
    """
    job = find_job(database, kind, fp)
    if job is not None and job.status == "completed":
        if reuse_completed is None or reuse_completed(job):
            echo(f"job {job.id} {kind}: already completed with this config (skipped)")
            return job, True
        job = None
    if job is not None:
        refuse_if_running_elsewhere(job)
        echo(f"job {job.id} {kind}: resuming ({job.status})")
        return job, False
    job = create_job(database, kind, config.model_dump(mode="json"), fp=fp, label=config.name, **create_kwargs)
    echo(f"job {job.id} {kind}: started")
    return job, False
