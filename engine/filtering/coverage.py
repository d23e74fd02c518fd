"""Latent reasoning, measured: how often the student *can* reach the right answer, before and after the filters.

The paper's observation is that a small student holds good reasoning paths that greedy decoding rarely finds.
Per sample job, over the questions it sampled (the student's own paths only):

- ``any_correct``: the share of questions with at least one correct path among all sampled paths;
- ``any_correct_filtered``: ... among the paths that passed every filter rule;
- ``selected_correct``: the share of questions whose selected path (by ``filters.select``) is correct;
- ``selected_paths`` and ``selected_paths_correct``: how many paths were selected, and the share of them that
  are correct. The two shares differ where some questions have no selected path: ``require_correct`` makes
  the second 100% and lowers the first.

For a filter job the filtered shares are of its own stored verdicts (``filter_verdicts``), whichever filter job
ran since; for a sample job, of the verdicts its path rows carry (its current filter job's). Beside them, the
greedy zero-shot accuracy of the same student on the dataset where it was evaluated. A job with no verdicts yet
(not filtered) reports the filtered shares as None.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection

from db.models import Evaluation, FilterVerdict, Job, Path
from db.vocabulary import FILTER, SAMPLE, ZERO_SHOT

KEYS = (
    "questions",
    "any_correct",
    "any_correct_filtered",
    "selected_correct",
    "selected_paths",
    "selected_paths_correct",
)


def sample_job_of(conn: Connection, job_id: int) -> tuple[int, str] | None:
    """The sample job whose paths ``job_id`` holds (a filter job: its parent), and its kind; None if unknown."""
    row = conn.execute(select(Job.kind, Job.parent_id).where(Job.id == job_id)).first()
    if row is None:
        return None
    kind, parent = row
    if kind == FILTER and parent is not None:
        return parent, kind
    return job_id, kind


def coverage(conn: Connection, job_id: int) -> dict[str, Any]:
    """The shares of the module docstring for the sample job ``job_id`` (or a filter job's sample job)."""
    found = sample_job_of(conn, job_id)
    if found is None:
        raise LookupError(f"no job with id {job_id}")
    sample_id, kind = found
    if kind not in (SAMPLE, FILTER):
        raise ValueError(f"job {job_id} is a {kind!r} job; coverage needs a sample or filter job")
    correct = func.coalesce(Path.correct, False)
    if kind == FILTER:  # the filter job's own verdicts, whichever filter job's the path rows carry now
        passed, selected = FilterVerdict.passed, FilterVerdict.selected
    else:  # a sample job: what its path rows carry (its current filter job's)
        passed, selected = Path.passed, Path.selected
    per_question = select(
        Path.question_id,
        func.max(case((correct, 1), else_=0)).label("any"),
        func.max(case((and_(correct, passed.is_(True)), 1), else_=0)).label("any_passed"),  # type: ignore[union-attr, attr-defined]
        func.max(case((and_(correct, selected.is_(True)), 1), else_=0)).label("sel"),  # type: ignore[attr-defined]
        func.max(case((passed.is_not(None), 1), else_=0)).label("judged"),  # type: ignore[union-attr, attr-defined]
        func.sum(case((selected.is_(True), 1), else_=0)).label("n_sel"),  # type: ignore[attr-defined]
        func.sum(case((and_(correct, selected.is_(True)), 1), else_=0)).label("n_sel_ok"),  # type: ignore[attr-defined]
    )
    if kind == FILTER:
        per_question = per_question.outerjoin(
            FilterVerdict, and_(FilterVerdict.filter_job_id == job_id, FilterVerdict.path_id == Path.id)
        )
    per_question = (
        per_question.where(Path.job_id == sample_id, Path.source == "self").group_by(Path.question_id).subquery()
    )
    n, any_, any_passed, sel, judged, n_sel, n_sel_ok = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(per_question.c.any), 0),
            func.coalesce(func.sum(per_question.c.any_passed), 0),
            func.coalesce(func.sum(per_question.c.sel), 0),
            func.coalesce(func.sum(per_question.c.judged), 0),
            func.coalesce(func.sum(per_question.c.n_sel), 0),
            func.coalesce(func.sum(per_question.c.n_sel_ok), 0),
        )
    ).one()
    filtered = judged > 0
    out: dict[str, Any] = {
        "job": job_id,
        "sample_job": sample_id,
        "questions": n,
        "any_correct": any_ / n if n else None,
        "any_correct_filtered": (any_passed / n if n else None) if filtered else None,
        "selected_correct": (sel / n if n else None) if filtered else None,
        "selected_paths": n_sel if filtered else None,
        "selected_paths_correct": (n_sel_ok / n_sel if n_sel else None) if filtered else None,
        "zero_shot_acc": zero_shot_acc(conn, sample_id),
    }
    return out


def zero_shot_acc(conn: Connection, sample_id: int) -> float | None:
    """The newest zero-shot accuracy on the sample job's dataset, for the same student (None without one)."""
    row = conn.execute(select(Job.dataset_id, Job.config).where(Job.id == sample_id)).first()
    if row is None or row[0] is None:
        return None
    student = ((row[1] or {}).get("student") or {}).get("model")
    for acc, config in conn.execute(
        select(Evaluation.acc, Job.config)
        .join(Job, Job.id == Evaluation.job_id)
        .where(Evaluation.dataset_id == row[0], Evaluation.label == ZERO_SHOT)
        .order_by(Evaluation.id.desc())  # type: ignore[union-attr]
    ):
        if ((config or {}).get("student") or {}).get("model") == student:
            return acc
    return None
