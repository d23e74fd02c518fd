"""Run labels from job lineage, as in the paper's Table II.

- the base model, evaluated as is → ``zero-shot``
- ``finetune`` (answers only) → ``Finetune``
- ``self-train`` (SERT stage 2) → ``SERT``
- ``distill`` whose parent is the teacher job (started from the base model) → ``RD``
- ``distill`` whose parent is a self-train job (started from its final checkpoint) → ``SERT+RD``
- ``eval`` → the label of the training job it evaluates (its parent), ``zero-shot`` without one.
"""

from __future__ import annotations

from sqlmodel import Session

from db.models import Job
from db.vocabulary import FINETUNE, RD, SERT, SERT_RD, ZERO_SHOT


def label_for(kind: str, parent_kind: str | None) -> str:
    """The label of a job of ``kind`` whose parent job is of ``parent_kind`` (None: no parent)."""
    if kind == "finetune":
        return FINETUNE
    if kind == "self-train":
        return SERT
    if kind == "distill":
        return SERT_RD if parent_kind == "self-train" else RD
    if kind == "eval":
        return ZERO_SHOT if parent_kind is None else ""
    raise ValueError(f"no lineage label for a {kind!r} job")


def job_label(session: Session, job: Job) -> str:
    """The label of a training or evaluation job, derived from its parents."""
    parent = session.get(Job, job.parent_id) if job.parent_id is not None else None
    if job.kind == "eval":
        return ZERO_SHOT if parent is None else job_label(session, parent)
    return label_for(job.kind, parent.kind if parent is not None else None)
