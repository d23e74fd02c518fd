"""Import recorded teacher rationales in the Fine-tune-CoT format (``teacher-text-davinci-002/D_<task>.json``).

``{"metadata": {...}, "data": {"<sample_index>": [{"sample_index", "completion_index", "question", "answer",
"reasoning_completion", "reasoning_finish_reason", "completion", ...}]}}``. Each completion of a question of the
dataset (matched by the dataset's sample index) becomes a teacher path of a completed ``teacher`` job: the
rationale is ``reasoning_completion``; the answer is parsed from ``completion`` (the text the teacher wrote
after "Therefore, the answer is") and graded against the dataset's gold answer. Importing the same file again
reuses its job and adds nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.errors import UserError
from db.models import Dataset, Job, JobItem, Question, utcnow
from db.models import Path as PathRow
from db.paths_repo import done_question_ids
from db.queries import get_dataset
from db.session import session_scope
from engine.answers import grade
from engine.jobs import JobContext, create_job, fingerprint, run_job
from engine.prompts import TEACHER_MARKER
from engine.teacher import store

BATCH_QUESTIONS = 500  # questions written per transaction
ROWS_PER_STATEMENT = 400  # paths per INSERT (SQLite caps the bound parameters of one statement)
MAX_MISMATCH_SHARE = 0.05  # questions whose text differs from the dataset's at the same index


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_recorded(path: Path) -> tuple[dict[str, Any], dict[int, list[dict[str, Any]]]]:
    """(metadata, {sample_index: [completion records]}) with clear errors for a file of another shape."""
    from engine.data.common import read_json

    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise UserError(f'{path}: expected the Fine-tune-CoT format {{"metadata": ..., "data": {{index: [...]}}}}')
    out: dict[int, list[dict[str, Any]]] = {}
    for key, records in raw["data"].items():
        try:
            index = int(key)
        except ValueError:
            raise UserError(f"{path}: data key {key!r} is not a sample index") from None
        if not isinstance(records, list):
            raise UserError(f"{path}: data[{key!r}] must be a list of completions")
        for pos, rec in enumerate(records):
            where = f"{path}: data[{key!r}][{pos}]"
            if not isinstance(rec, dict):
                raise UserError(f"{where}: expected an object")
            for field in ("reasoning_completion", "completion"):
                if not isinstance(rec.get(field), str):
                    raise UserError(f"{where}: field {field!r} missing or not text")
        out[index] = records
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    return metadata, out


def recorded_rows(records: list[dict[str, Any]], question: Question, dataset: Dataset) -> list[dict[str, Any]]:
    rows = []
    letters = store.answer_letters(dataset)
    for pos, rec in enumerate(records):
        sample = rec.get("completion_index", pos)
        sample = sample if isinstance(sample, int) and not isinstance(sample, bool) else pos
        answer_text = rec["completion"]
        answer, correct = grade(f"{TEACHER_MARKER}{answer_text}", question.answer, dataset.answer_type, letters)
        rows.append(
            {
                "source": store.SOURCE,
                "branch": 0,
                "sample": sample,
                "text": rec["reasoning_completion"].strip(),
                "tokens": 0,
                "answer": answer,
                "correct": correct,
                "verdicts": {
                    "teacher": {
                        "finish_reason": str(rec.get("reasoning_finish_reason") or ""),
                        "answer_text": answer_text.strip(),
                    }
                },
            }
        )
    return rows


def _write_batch(session: Session, job_id: int, batch: list[tuple[Question, list[dict[str, Any]]]]) -> int:
    """``write_question_paths`` for many questions in two statements (same keys, same conflict rules)."""
    now = utcnow()
    values = [
        {"job_id": job_id, "question_id": q.id, "selected": False, "created_at": now, **row}
        for q, rows in batch
        for row in rows
    ]
    inserted = 0
    for start in range(0, len(values), ROWS_PER_STATEMENT):
        stmt = (
            insert(PathRow)
            .values(values[start : start + ROWS_PER_STATEMENT])
            .on_conflict_do_nothing(index_elements=["job_id", "question_id", "source", "branch", "sample"])
        )
        inserted += session.exec(stmt).rowcount or 0  # type: ignore[call-overload]
    items = [
        {"job_id": job_id, "question_id": q.id, "status": "done", "reason": "", "attempts": 1, "updated_at": now}
        for q, _rows in batch
    ]
    stmt = insert(JobItem).values(items)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "question_id"], set_={"status": "done", "reason": "", "updated_at": now}
    )
    session.exec(stmt)  # type: ignore[call-overload]
    return inserted


def import_recorded(database: Engine, dataset_name: str, path: Path | str, echo: Any = None) -> dict[str, Any]:
    """Import a recorded-rationale file for a dataset of the workspace; returns the counts per split."""
    echo = echo or (lambda _line: None)
    path = Path(path)
    metadata, data = read_recorded(path)
    with session_scope(database) as s:
        dataset = get_dataset(s, dataset_name)
        questions = list(s.exec(select(Question).where(Question.dataset_id == dataset.id)).all())
    by_index = {q.index: q for q in questions}
    matched = [(by_index[i], recs) for i, recs in sorted(data.items()) if i in by_index and recs]
    if not matched:
        raise UserError(f"{path}: none of its sample indices are questions of dataset {dataset_name!r}")
    texts = [(q, recs[0].get("question")) for q, recs in matched if isinstance(recs[0].get("question"), str)]
    differ = sum(1 for q, text in texts if _norm(q.text) != _norm(text))
    if texts and differ / len(texts) > MAX_MISMATCH_SHARE:
        raise UserError(
            f"{path}: its questions do not match dataset {dataset_name!r} ({differ} of {len(texts)} differ at the "
            f"same sample index); is it the file of task {dataset.task!r}?"
        )

    base_model = str(metadata.get("base_model") or "teacher")
    fp = fingerprint("teacher", {"source": "recorded", "dataset_id": dataset.id, "file_sha256": _file_digest(path)})
    with session_scope(database) as s:
        job = s.exec(
            select(Job).where(Job.kind == "teacher", Job.fingerprint == fp).order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()
    if job is None:
        job = create_job(
            database,
            "teacher",
            {"source": "recorded", "file": str(path), "dataset": dataset.name, "base_model": base_model},
            fp=fp,
            dataset_id=dataset.id,
            label=f"recorded {base_model}",
        )
    assert job.id is not None
    job_id = job.id
    inserted = 0
    if job.status == "completed":
        echo(f"job {job_id}: this file was imported before (nothing to add)")
        return _report(database, job_id, dataset.name, len(matched), questions, inserted)

    def body(ctx: JobContext) -> dict:
        nonlocal inserted
        with session_scope(database) as s:
            done = done_question_ids(s, job_id)
        todo = [(q, recs) for q, recs in matched if q.id not in done]
        for start in range(0, len(todo), BATCH_QUESTIONS):
            chunk = todo[start : start + BATCH_QUESTIONS]
            with session_scope(database) as s:
                inserted += _write_batch(s, job_id, [(q, recorded_rows(recs, q, dataset)) for q, recs in chunk])
            ctx.progress(len(done) + start + len(chunk), len(matched), "questions")
        with session_scope(database) as s:
            counts = store.path_counts(s, job_id)
        return {
            "source": "recorded",
            "imported": len(matched),
            "answered": len(matched),
            "rationales": sum(counts["total"].values()),
            "correct": sum(counts["correct"].values()),
            "splits": counts,
        }

    run_job(JobContext(database, job_id, echo), body)
    return _report(database, job_id, dataset.name, len(matched), questions, inserted)


def _report(
    database: Engine, job_id: int, dataset_name: str, imported: int, questions: list[Question], inserted: int
) -> dict[str, Any]:
    with session_scope(database) as s:
        counts = store.path_counts(s, job_id)
    splits = sorted({q.split for q in questions}, key=lambda x: (x != "train", x != "test", x))
    return {
        "dataset": dataset_name,
        "job": job_id,
        "imported": imported,  # questions of the file that are questions of the dataset
        "rationales": sum(counts["total"].values()),
        "inserted": inserted,
        # per split: rationales ("total", "correct": a question may carry several) and questions
        "correct": {split: counts["correct"].get(split, 0) for split in splits},
        "total": {split: counts["total"].get(split, 0) for split in splits},
        "questions": {split: counts["questions"].get(split, 0) for split in splits},
        "questions_correct": {split: counts["questions_correct"].get(split, 0) for split in splits},
    }


def import_task_with_rationales(
    database: Engine, name: str, data_root: Path | str, task: str | None = None, teacher: str = "text-davinci-002"
) -> bool:
    """Import Fine-tune-CoT task ``task`` (``name`` by default) of ``data_root`` (its ``dataset/``, ``split/``
    and ``teacher-<teacher>/`` folders, as in ../shared/data/reasoning-teacher) as dataset ``name``, with the
    teacher's recorded rationales; nothing when a dataset of that name is there. True when it imported."""
    from db.queries import save_dataset
    from engine.data import reasoning_teacher

    root, task = Path(data_root), task or name
    try:
        with session_scope(database) as s:
            get_dataset(s, name)
        return False
    except UserError:
        pass
    spec = reasoning_teacher.load(name, root / "dataset" / f"{task}.json", root / "split" / f"{task}__default.json")
    with session_scope(database) as s:
        save_dataset(s, spec)
    import_recorded(database, name, root / f"teacher-{teacher}" / f"D_{task}.json")
    return True
