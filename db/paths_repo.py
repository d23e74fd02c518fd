"""Writes and reads of reasoning paths, shared by the engine (writer) and the app (reader, decisions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects.sqlite import insert
from sqlmodel import Session, select

from db.models import JobItem, Path, utcnow
from db.vocabulary import DECISIONS  # noqa: F401  (db.decision_journal imports it from here)


def write_question_paths(
    session: Session, job_id: int, question_id: int, rows: list[dict[str, Any]], *, item_status: str = "done"
) -> int:
    """Insert the paths of one question and mark the question done for the job, in the caller's transaction.

    Rows already present (same job, question, source, branch, sample) are left untouched — decisions on them
    survive a re-run. Returns the number of rows inserted.
    """
    inserted = 0
    if rows:
        now = utcnow()
        values = [
            {
                "job_id": job_id,
                "question_id": question_id,
                "source": "self",
                "verdicts": {},
                "selected": False,
                "created_at": now,
                **row,
            }
            for row in rows
        ]
        stmt = (
            insert(Path)
            .values(values)
            .on_conflict_do_nothing(index_elements=["job_id", "question_id", "source", "branch", "sample"])
        )
        inserted = session.exec(stmt).rowcount or 0  # type: ignore[call-overload]
    mark_item(session, job_id, question_id, item_status)
    return inserted


def mark_item(session: Session, job_id: int, question_id: int, status: str = "done", reason: str = "") -> None:
    stmt = insert(JobItem).values(
        job_id=job_id, question_id=question_id, status=status, reason=reason, attempts=1, updated_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "question_id"],
        set_={"status": status, "reason": reason, "attempts": JobItem.attempts + 1, "updated_at": utcnow()},
    )
    session.exec(stmt)  # type: ignore[call-overload]


def done_question_ids(session: Session, job_id: int) -> set[int]:
    return set(
        session.exec(select(JobItem.question_id).where(JobItem.job_id == job_id, JobItem.status == "done")).all()
    )


def set_decision(session: Session, path_id: int, decision: str | None, at: datetime | None = None) -> str | None:
    """Record a person's decision (None clears it); returns the previous decision, for undo.

    ``at``: when the person decided, where that was before this write (a decision kept in the journal of
    :mod:`db.decision_journal`); now by default. ``decided_at`` is the time of the last decision on the path,
    a cleared one included: the journal's replay compares it so that an older decision never overwrites a
    newer one (:func:`db.decision_journal.replay`)."""
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    path = session.get(Path, path_id)
    if path is None:
        raise KeyError(path_id)
    previous = path.decision
    path.decision = decision
    path.decided_at = at or utcnow()
    session.add(path)
    return previous
