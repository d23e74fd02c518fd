"""Run labels from job lineage, as in the paper's Table II.

- the base model, evaluated as is → ``zero-shot``
- ``finetune`` (answers only) → ``Finetune``
- ``self-train`` (SERT stage 2) → ``SERT``; round r > 1 of ``run --stage self-train --rounds N`` (its summary's
  ``round``) → ``SERT r2``, ...
- ``distill`` whose parent is the teacher job (started from the base model) → ``RD``
- ``distill`` whose parent is a self-train job (started from its final checkpoint) → ``SERT+RD``
- ``eval`` → the label of the training job it evaluates (its parent), ``zero-shot`` without one.
"""

from __future__ import annotations

from sqlmodel import Session

from db.models import Job
from db.vocabulary import FINETUNE, RD, ROUND_KEY, SERT, SERT_RD, ZERO_SHOT, round_label


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


def job_round(job: Job) -> int:
    """The self-training round of a job: its summary's ``round``, 1 without one."""
    value = (job.summary or {}).get(ROUND_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def job_label(session: Session, job: Job) -> str:
    """The label of a training or evaluation job, derived from its parents."""
    parent = session.get(Job, job.parent_id) if job.parent_id is not None else None
    if job.kind == "eval":
        return ZERO_SHOT if parent is None else job_label(session, parent)
    if job.kind == "self-train":
        return round_label(SERT, job_round(job))
    return label_for(job.kind, parent.kind if parent is not None else None)
