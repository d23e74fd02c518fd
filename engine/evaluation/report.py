"""The run comparison behind ``sert-tui report runs``: one row per evaluation, and the paper's Table II pivot
(one line per student / dataset / split, one Acc column per label)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from db.models import Checkpoint, Dataset, Evaluation, Job
from engine.evaluation.lineage import TABLE_ORDER

#: Keys of ``report runs --json``.
JSON_KEYS = ("label", "checkpoint", "dataset", "split", "n", "acc", "fmt", "len", "rep")


def run_rows(session: Session) -> list[dict[str, Any]]:
    """Every evaluation, oldest first: the JSON keys plus ``student``, ``evaluation``, ``job`` and ``step``."""
    stmt = (
        select(Evaluation, Dataset, Checkpoint, Job)
        .join(Dataset, Dataset.id == Evaluation.dataset_id)
        .join(Job, Job.id == Evaluation.job_id)
        .outerjoin(Checkpoint, Checkpoint.id == Evaluation.checkpoint_id)
        .order_by(Evaluation.id)
    )
    rows = []
    for ev, ds, ckpt, job in session.exec(stmt).all():
        rows.append(
            {
                "label": ev.label,
                "checkpoint": ckpt.path if ckpt is not None else ev.model_ref,
                "dataset": ds.name,
                "split": ev.split,
                "n": ev.n,
                "acc": ev.acc,
                "fmt": ev.fmt,
                "len": ev.len,
                "rep": ev.rep,
                "student": ((job.config or {}).get("student") or {}).get("model", ""),
                "evaluation": ev.id,
                "job": job.id,
                "status": job.status,
                "step": ckpt.step if ckpt is not None else None,
            }
        )
    return rows


def table_two(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Table II: the label columns present (paper order first) and one line per (student, dataset, split)
    with the newest evaluation's accuracy per label."""
    present = {r["label"] for r in rows}
    labels = [lbl for lbl in TABLE_ORDER if lbl in present] + sorted(present - set(TABLE_ORDER))
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["student"], r["dataset"], r["split"])
        line = lines.setdefault(key, {"student": key[0], "dataset": key[1], "split": key[2]})
        line[r["label"]] = r["acc"]
    return labels, list(lines.values())
