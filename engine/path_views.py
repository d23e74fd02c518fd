"""Read-only views of a job's paths, shared by ``paths list``, the exports and scripts.

A filter job shows its sample job's paths; a filter job whose verdicts a later filter run replaced shows its own,
judged again from its frozen settings (the rules are pure functions of the stored texts and numbers).
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


def replaced_verdicts(session: Any, job_id: int, sample_job: Any) -> dict[int, Any] | None:
    """For a filter job whose verdicts a later filter run replaced on the paths: its own verdicts, judged again
    from its frozen filter settings and the stored texts and numbers (the rules are pure), by path id. None
    for a sample job, or a filter job whose verdicts the paths carry."""
    from db.models import Dataset, Job
    from engine.config import FiltersConfig
    from engine.filtering.rules import judge_job
    from engine.sampling.stage import answer_spec

    job = session.get(Job, job_id)
    if job.kind != "filter" or (sample_job.summary or {}).get("filter_job") == job_id:
        return None
    cfg = FiltersConfig.model_validate((job.config or {}).get("filters", {}))
    results, _counts = judge_job(session, sample_job.id, cfg, answer_spec(session.get(Dataset, sample_job.dataset_id)))
    return {r.id: r for r in results}


def path_rows(
    session: Any,
    job_id: int,
    decision: str | None = None,
    selected: bool = False,
    verdicts: dict[int, Any] | None = None,
) -> list[dict]:
    """Paths of a job in question order, as the JSON objects of ``paths list --json``; ``verdicts``: results
    that replace the stored verdicts and selection (see :func:`replaced_verdicts`). ``duplicate_of``: the id
    of the path this one duplicates (same question, same normalised text: db.duplicates), else None.
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
