"""Pipeline stages: each module registers ``@stage("name")`` functions with engine.pipeline.

Helpers shared by the stages live here: finding the job to resume (or skipping a completed one) and the
dataset a config names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from db.models import Dataset, Job
from db.session import session_scope
from engine.config import ExperimentConfig
from engine.errors import UserError
from engine.jobs import create_job, find_job, refuse_if_running_elsewhere


def config_dataset(engine: Engine, config: ExperimentConfig) -> Dataset:
    """The dataset ``data.dataset`` names; a clear error when it is empty or unknown."""
    from db.queries import get_dataset

    if not config.data.dataset:
        raise UserError("data.dataset is empty: name a dataset of the workspace (sert-tui data list)")
    with session_scope(engine) as s:
        return get_dataset(s, config.data.dataset)


def reload_job(engine: Engine, job_id: int) -> Job:
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def find_or_create_job(
    engine: Engine,
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
    job = find_job(engine, kind, fp)
    if job is not None and job.status == "completed":
        if reuse_completed is None or reuse_completed(job):
            echo(f"job {job.id} {kind}: already completed with this config (skipped)")
            return job, True
        job = None
    if job is not None:
        refuse_if_running_elsewhere(job)
        echo(f"job {job.id} {kind}: resuming ({job.status})")
        return job, False
    job = create_job(engine, kind, config.model_dump(mode="json"), fp=fp, label=config.name, **create_kwargs)
    echo(f"job {job.id} {kind}: started")
    return job, False
