"""Reads and writes shared by the engine, the CLI and the app."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import UserError, brief
from db.models import Dataset, Job, Model, Question
from db.records import DatasetSpec


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if dataset is None:
        names = session.exec(select(Dataset.name)).all()
        hint = f" (datasets: {', '.join(names)})" if names else " (the workspace has no datasets)"
        raise UserError(f"no dataset named {name!r}{hint}")
    return dataset


def save_dataset(session: Session, spec: DatasetSpec) -> Dataset:
    """Insert a dataset and all its questions; the caller's transaction makes it all-or-nothing."""
    if session.exec(select(Dataset.id).where(Dataset.name == spec.name)).first() is not None:
        raise UserError(f"a dataset named {spec.name!r} already exists in this workspace")
    if not spec.records:
        raise UserError(f"{spec.origin}: no questions to import")
    # SQLite stores UTF-8 only: names from the command line, split names from files and file names may hold
    # lone surrogates (undecodable bytes, JSON's "\\ud800"); refuse them clearly instead of failing mid-insert.
    for label, value in [("dataset name", spec.name), ("task", spec.task)] + [
        ("split name", split) for split in {r.split for r in spec.records}
    ]:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{label} {brief(value)} is not valid Unicode text") from None
    dataset = Dataset(
        name=spec.name,
        task=spec.task,
        answer_type=spec.answer_type,
        source=spec.source,
        origin=spec.origin.encode("utf-8", "replace").decode("utf-8"),
        meta=spec.meta,
    )
    session.add(dataset)
    session.flush()
    session.bulk_insert_mappings(  # type: ignore[arg-type]
        Question,
        [
            {
                "dataset_id": dataset.id,
                "split": r.split,
                "index": r.index,
                "position": r.position,
                "text": r.text,
                "answer": r.answer,
                "choices": r.choices,
                "meta": r.meta,
            }
            for r in spec.records
        ],
    )
    return dataset


def dataset_counts(session: Session) -> list[dict]:
    """One row per dataset: name, task, and question counts per split."""
    counts: dict[int, dict[str, int]] = {}
    rows = session.exec(
        select(Question.dataset_id, Question.split, func.count()).group_by(Question.dataset_id, Question.split)
    ).all()
    for dataset_id, split, n in rows:
        counts.setdefault(dataset_id, {})[split] = n
    out = []
    for ds in session.exec(select(Dataset).order_by(Dataset.id)).all():
        per_split = counts.get(ds.id, {})
        out.append(
            {
                "name": ds.name,
                "task": ds.task,
                "train": per_split.get("train", 0),
                "test": per_split.get("test", 0),
                "answer_type": ds.answer_type,
                "source": ds.source,
                "splits": per_split,
            }
        )
    return out


def split_questions(session: Session, dataset_id: int, split: str, limit: int | None = None) -> list[Question]:
    """Questions of a split in the split's order; ``limit`` takes the first N."""
    stmt = (
        select(Question).where(Question.dataset_id == dataset_id, Question.split == split).order_by(Question.position)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.exec(stmt).all())


def list_jobs(session: Session) -> list[Job]:
    return list(session.exec(select(Job).order_by(Job.id)).all())


def register_model(session: Session, name: str, source: str, local_path: str) -> Model:
    """Record a prepared model in the workspace (or refresh its path); returns the row."""
    model = session.exec(select(Model).where(Model.name == name)).first()
    if model is None:
        model = Model(name=name, source=source, local_path=local_path)
    else:
        model.source, model.local_path = source, local_path
    session.add(model)
    session.flush()
    return model
