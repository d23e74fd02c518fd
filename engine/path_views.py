"""Read-only views of a job's paths, shared by ``paths list``, the exports and scripts.

A filter job shows its sample job's paths with its own stored verdicts and selection (``filter_verdicts``), whichever
filter job's verdicts the path rows carry now; a sample job shows its path rows as they are (the display copy of
its current filter job's verdicts).
"""

from __future__ import annotations

from typing import Any


def paths_job(session: Any, job_id: int):
    """The job whose paths ``job_id`` shows (db.app_queries.paths_job_id: a filter job's sample job, else the
    job itself), with a clear error when either is missing."""
    from db.app_queries import paths_job_id
    from db.errors import UserError
    from db.models import Job

    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"no job with id {job_id}")
    if job.kind == "filter" and job.parent_id is None:
        raise UserError(f"filter job {job_id} has no sample job")
    shown = paths_job_id(session.connection(), job_id)
    if shown == job_id:
        return job
    parent = session.get(Job, shown)
    if parent is None:
        raise UserError(f"filter job {job_id}: its sample job {shown} is gone")
    return parent


def own_verdicts(session: Any, job_id: int) -> dict[int, Any] | None:
    """For a filter job: its own stored verdicts and selection (``filter_verdicts``) by path id, whichever filter
    job's the path rows carry now; None for any other job (its path rows are shown as they are)."""
    from sqlmodel import select

    from db.models import FilterVerdict, Job

    job = session.get(Job, job_id)
    if job is None or job.kind != "filter":
        return None
    rows = session.exec(select(FilterVerdict).where(FilterVerdict.filter_job_id == job_id)).all()
    return {r.path_id: r for r in rows}


def path_rows(
    session: Any,
    job_id: int,
    decision: str | None = None,
    selected: bool = False,
    verdicts: dict[int, Any] | None = None,
) -> list[dict]:
    """Paths of a job in question order, as the JSON objects of ``paths list --json``; ``verdicts``: a filter
    job's own rows by path id, which replace the rows' verdicts and selection (see :func:`own_verdicts`).
    ``duplicate_of``: the id of the path this one duplicates (same question, same normalised text:
    db.duplicates), else None.
    ``confidence``: CoT-decoding's Δ of the path's answer (engine.sampling.paths.path_confidence), None where no
    answer was found or the sampler gave no margins; ``gold_logp``: the student's log-likelihood of the gold
    answer sentence after the path (engine.filtering.gold, ``filters.select = "gold_likelihood"``), None where no
    such filter job scored it; ``agreement``: how many of the question's paths in this job
    give the same parsed answer, this one included (db.app_queries.agreement_of), None without an answer."""
    from sqlmodel import select

    from db import duplicates
    from db.app_queries import agreement_of, answer_agreement
    from db.models import Path, Question

    stmt = (
        select(Path, Question.index)
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id)
        .order_by(Question.position, Path.source, Path.branch, Path.sample, Path.id)
    )
    if decision == "none":
        stmt = stmt.where(Path.decision.is_(None))  # type: ignore[union-attr]
    elif decision is not None:
        stmt = stmt.where(Path.decision == decision)
    if selected and verdicts is None:
        stmt = stmt.where(Path.selected.is_(True))  # type: ignore[attr-defined]
    duplicate_of = duplicates.find(session.connection(), job_id).of  # of the whole job, whatever is listed
    answers = answer_agreement(session.connection(), job_id)
    rows = []
    for p, index in session.exec(stmt).all():
        if verdicts is None:
            path_verdicts, is_selected = p.verdicts, p.selected
        else:
            judged = verdicts.get(p.id)
            path_verdicts, is_selected = (judged.verdicts, judged.selected) if judged else ({}, False)
        if selected and not is_selected:
            continue
        rows.append(
            {
                "id": p.id,
                "question_index": index,
                "branch": p.branch,
                "sample": p.sample,
                "text": p.text,
                "tokens": p.tokens,
                "rep2": p.rep2,
                "perplexity": p.perplexity,
                "confidence": p.confidence,
                "gold_logp": p.gold_logp,
                "answer": p.answer,
                "agreement": agreement_of(answers, p.question_id, p.source, p.answer),
                "verdicts": path_verdicts,
                "selected": is_selected,
                "decision": p.decision,
                "decided_at": p.decided_at.isoformat() if p.decided_at else None,
                "duplicate_of": duplicate_of.get(p.id),
            }
        )
    return rows
