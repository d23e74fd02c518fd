"""Each filter job's own verdicts (table ``filter_verdicts``) and the display copy on the path rows.

A filter job writes one row per judged path: every rule's verdict, passed and selected. Its rows are what
"the selection of filter job F" means everywhere (training, exports, ``report coverage``, ``paths list``, the
paths screen of a filter job). The path rows of its sample job also carry a copy of the verdicts, passed and
selected of one filter job, the one the sample job's ``summary["filter_job"]`` names (its current one): the
paths screen of a sample job pages and counts them through the ``paths`` indexes. :func:`show` makes a filter
job that copy. All of it runs in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlmodel import Session

from db.models import FilterVerdict, Job, Path

#: Rows per INSERT (five bound values each, below SQLite's limit of bound variables).
CHUNK = 5000


def write(session: Session, filter_job_id: int, rows: list[dict[str, Any]]) -> None:
    """Replace the rows of ``filter_job_id`` with ``rows`` (``{"path_id", "verdicts", "passed", "selected"}``)."""
    session.exec(delete(FilterVerdict).where(FilterVerdict.filter_job_id == filter_job_id))  # type: ignore[call-overload, arg-type]
    for i in range(0, len(rows), CHUNK):
        values = [{"filter_job_id": filter_job_id, **row} for row in rows[i : i + CHUNK]]
        session.exec(insert(FilterVerdict).values(values))  # type: ignore[call-overload]


def count(session: Session, filter_job_id: int) -> int:
    """How many paths filter job ``filter_job_id`` has a row for (0: none stored, e.g. an older filter job
    whose verdicts were overwritten on the paths before sert-tui kept them per filter job)."""
    return int(
        session.exec(select(func.count()).where(FilterVerdict.filter_job_id == filter_job_id)).one()[0]  # type: ignore[call-overload]
    )


def current(session: Session, sample_job_id: int) -> int | None:
    """The filter job whose verdicts the path rows of ``sample_job_id`` carry now (``summary["filter_job"]``)."""
    job = session.get(Job, sample_job_id)
    value = (job.summary or {}).get("filter_job") if job is not None else None
    return int(value) if value is not None else None


def show(session: Session, sample_job_id: int, filter_job_id: int) -> None:
    """Make the path rows of ``sample_job_id`` carry the verdicts, passed and selected of ``filter_job_id`` (its
    own rows; a path it has no row for is not filtered), and name it in the sample job's ``summary``."""
    own = select(FilterVerdict).where(FilterVerdict.filter_job_id == filter_job_id, FilterVerdict.path_id == Path.id)
    session.exec(  # type: ignore[call-overload]
        update(Path)
        .where(Path.job_id == sample_job_id)
        .values(
            verdicts=func.coalesce(own.with_only_columns(FilterVerdict.verdicts).scalar_subquery(), "{}"),
            passed=own.with_only_columns(FilterVerdict.passed).scalar_subquery(),
            selected=func.coalesce(own.with_only_columns(FilterVerdict.selected).scalar_subquery(), False),
        )
    )
    job = session.get(Job, sample_job_id)
    assert job is not None
    job.summary = {**(job.summary or {}), "filter_job": filter_job_id}
    session.add(job)
