"""What the teacher paths look like in the workspace, shared by the online stage, the Batch API import and
the recorded import; and how the distillation stage finds them.

A rationale is a row of ``paths``: ``source="teacher"``, ``job_id`` = the teacher job, ``branch = 0``,
``sample`` = the sample (completion) index, ``text`` = the rationale R, ``answer`` = the teacher's answer
parsed from it, ``correct`` against the question's gold answer, ``tokens`` = completion tokens when known.
The distillation stage reads ``teacher_paths(session, job_id, split="train", correct_only=...)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.models import Dataset, Job, JobItem, Path, Question
from db.paths_repo import mark_item, write_question_paths
from db.session import session_scope
from engine.answers import answer_spec, grade
from engine.config import ExperimentConfig
from engine.jobs import fingerprint
from engine.prompts import TEACHER_PROMPT_VERSION, teacher_prompt
from engine.teacher.client import Endpoint, Reply, TeacherRequest, normalize_base_url

SOURCE = "teacher"
#: Teacher settings that change the rationales; the rest (concurrency, time-outs, prices) only change how
#: they are fetched, so changing those resumes the same job.
RESULT_KEYS = ("base_url", "model", "api", "temperature", "max_tokens", "samples")


def teacher_requests(config: ExperimentConfig, question: str) -> list[TeacherRequest]:
    t = config.teacher
    prompt = teacher_prompt(question)
    return [TeacherRequest(prompt, t.temperature, t.max_tokens, sample) for sample in range(t.samples)]


def teacher_endpoint(config: ExperimentConfig) -> Endpoint:
    return Endpoint.from_config(config.teacher, "teacher")


def teacher_fingerprint(config: ExperimentConfig, dataset: Dataset) -> str:
    teacher = {k: getattr(config.teacher, k) for k in RESULT_KEYS}
    teacher["base_url"] = normalize_base_url(teacher["base_url"])
    return fingerprint(
        "teacher",
        {
            "prompt": TEACHER_PROMPT_VERSION,
            "teacher": teacher,
            "data": {
                "dataset_id": dataset.id,
                "dataset": dataset.name,
                "split": config.data.split,
                "train_limit": config.data.train_limit,
            },
        },
    )


def answer_letters(dataset: Dataset) -> str:
    return answer_spec(dataset).letters


def rationale_row(
    reply: Reply, sample: int, gold: str, dataset: Dataset, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    text = reply.text.strip()
    answer, correct = grade(text, gold, dataset.answer_type, answer_letters(dataset))
    return {
        "source": SOURCE,
        "branch": 0,
        "sample": sample,
        "text": text,
        "tokens": reply.completion_tokens,
        "answer": answer,
        "correct": correct,
        "verdicts": {"teacher": {"finish_reason": reply.finish_reason, **(extra or {})}},
    }


def store_question(database: Engine, job_id: int, question: Question, dataset: Dataset, replies: list[Reply]) -> int:
    """Write the rationales of one question and mark it done, in one transaction; returns rows inserted."""
    rows = [rationale_row(reply, sample, question.answer, dataset) for sample, reply in enumerate(replies)]
    assert question.id is not None
    with session_scope(database) as s:
        return write_question_paths(s, job_id, question.id, rows)


def mark_failed(database: Engine, job_id: int, question_id: int, reason: str) -> None:
    with session_scope(database) as s:
        mark_item(s, job_id, question_id, status="failed", reason=reason[:500])


def item_counts(session: Session, job_id: int) -> dict[str, int]:
    rows = session.exec(
        select(JobItem.status, func.count()).where(JobItem.job_id == job_id).group_by(JobItem.status)
    ).all()
    return {status: int(n) for status, n in rows}


def failed_reasons(session: Session, job_id: int, limit: int = 3) -> list[str]:
    rows = session.exec(
        select(JobItem.reason).where(JobItem.job_id == job_id, JobItem.status == "failed").limit(limit)
    ).all()
    return [r for r in rows if r]


def path_counts(session: Session, job_id: int) -> dict[str, dict[str, int]]:
    """Teacher rationales of a job per split, and the questions they answer: ``{"total": {split: n},
    "correct": {split: n}}`` count rationales (a question may carry several: Fine-tune-CoT's diverse
    reasoning), ``{"questions": {split: n}, "questions_correct": {split: n}}`` the questions with a rationale
    and with at least one correct one."""
    rows = session.exec(
        select(Question.split, func.count(Path.id), func.sum(case((Path.correct == True, 1), else_=0)))  # noqa: E712
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id, Path.source == SOURCE)
        .group_by(Question.split)
    ).all()
    per_question = (
        select(Question.split, Path.question_id, func.max(case((Path.correct == True, 1), else_=0)).label("ok"))  # noqa: E712
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id, Path.source == SOURCE)
        .group_by(Question.split, Path.question_id)
        .subquery()
    )
    questions = session.exec(
        select(per_question.c.split, func.count(), func.sum(per_question.c.ok)).group_by(per_question.c.split)
    ).all()
    return {
        "total": {split: int(n) for split, n, _c in rows},
        "correct": {split: int(c or 0) for split, _n, c in rows},
        "questions": {split: int(n) for split, n, _c in questions},
        "questions_correct": {split: int(c or 0) for split, _n, c in questions},
    }


def teacher_paths(
    session: Session, job_id: int, *, split: str | None = "train", correct_only: bool = True
) -> list[tuple[Path, Question]]:
    """The rationales of a teacher job with their questions (in split order, then sample order)."""
    stmt = (
        select(Path, Question)
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id, Path.source == SOURCE)
    )
    if split is not None:
        stmt = stmt.where(Question.split == split)
    if correct_only:
        stmt = stmt.where(Path.correct == True)  # noqa: E712
    stmt = stmt.order_by(Question.position, Path.sample)
    return [(p, q) for p, q in session.exec(stmt).all()]


def recorded_job(session: Session, dataset_id: int) -> Job | None:
    """The newest completed job of recorded rationales for a dataset."""
    jobs = session.exec(
        select(Job)
        .where(Job.kind == "teacher", Job.dataset_id == dataset_id, Job.status == "completed")
        .order_by(Job.id.desc())  # type: ignore[union-attr]
    ).all()
    for job in jobs:
        if (job.config or {}).get("source") == "recorded":
            return job
    return None


def find_teacher_job(database: Engine, config: ExperimentConfig, dataset: Dataset) -> Job | None:
    """The teacher job ``run --stage teacher`` uses for ``config``: the online job with the config's
    fingerprint, or (no ``teacher.base_url``) the recorded rationales imported for the dataset."""
    with session_scope(database) as s:
        if not config.teacher.base_url:
            return recorded_job(s, dataset.id)  # type: ignore[arg-type]
        fp = teacher_fingerprint(config, dataset)
        return s.exec(
            select(Job).where(Job.kind == "teacher", Job.fingerprint == fp).order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()
