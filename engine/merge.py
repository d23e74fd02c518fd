"""Merging workspace files: the shards of a sharded run (``run --shard i/n``) into one workspace.

Rows are matched by their natural keys, never by row id: datasets by name, questions by (dataset, index),
models by name, jobs by (kind, fingerprint) — a sharded job's fingerprint leaves the shard out, so the shards
of one run become one job — paths by (job, question, source, branch, sample), job items by (job, question),
metrics by (job, step, name), checkpoints by (job, step), teacher responses by their cache key. Merging the
same shard twice adds nothing. A person's decision on a path is kept; one from a source fills an undecided
target path. The whole merge is one transaction on the target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.errors import UserError
from db.models import (
    Checkpoint,
    Dataset,
    Evaluation,
    Job,
    JobEvent,
    JobItem,
    Metric,
    Model,
    Path,
    Prediction,
    Question,
    TeacherResponse,
)
from db.session import open_workspace, session_scope

STATUS_RANK = {"failed": 0, "cancelled": 1, "pending": 2, "running": 3, "completed": 4}


def _columns(row: Any, drop: tuple[str, ...] = ("id",)) -> dict[str, Any]:
    return {k: v for k, v in row.model_dump().items() if k not in drop}


class _Merger:
    def __init__(self, target: Session, echo: Callable[[str], None]):
        self.t = target
        self.source_name = ""
        self.echo = echo
        self.counts: dict[str, int] = {}

    def bump(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def merge(self, src: Session) -> None:
        datasets = self._datasets(src)
        questions = self._questions(src, datasets)
        models = self._models(src)
        jobs = self._jobs(src, datasets, models)
        self._job_items(src, jobs, questions)
        self._paths(src, jobs, questions)
        self._metrics(src, jobs)
        checkpoints = self._checkpoints(src, jobs)
        self._evaluations(src, jobs, datasets, questions, checkpoints)
        self._events(src, jobs)
        self._teacher_cache(src)

    # -- one table each ------------------------------------------------------------------------------
    def _datasets(self, src: Session) -> dict[int, int]:
        out = {}
        for ds in src.exec(select(Dataset)).all():
            existing = self.t.exec(select(Dataset).where(Dataset.name == ds.name)).first()
            if existing is None:
                existing = Dataset(**_columns(ds))
                self.t.add(existing)
                self.t.flush()
                self.bump("datasets")
            elif (existing.task, existing.answer_type) != (ds.task, ds.answer_type):
                raise UserError(f"dataset {ds.name!r} differs between workspaces ({existing.task} vs {ds.task})")
            out[ds.id] = existing.id
        return out

    def _questions(self, src: Session, datasets: dict[int, int]) -> dict[int, int]:
        rows = src.exec(select(Question)).all()
        values = [{**_columns(q), "dataset_id": datasets[q.dataset_id]} for q in rows]
        if values:
            stmt = insert(Question).on_conflict_do_nothing(index_elements=["dataset_id", "index"])
            for chunk in _chunks(values):
                self.bump("questions", self.t.exec(stmt.values(chunk)).rowcount or 0)  # type: ignore[call-overload]
        ids = {
            (dataset_id, index): qid
            for qid, dataset_id, index in self.t.exec(select(Question.id, Question.dataset_id, Question.index)).all()
        }
        return {q.id: ids[(datasets[q.dataset_id], q.index)] for q in rows}

    def _models(self, src: Session) -> dict[int, int]:
        out = {}
        for m in src.exec(select(Model)).all():
            existing = self.t.exec(select(Model).where(Model.name == m.name)).first()
            if existing is None:
                existing = Model(**_columns(m))
                self.t.add(existing)
                self.t.flush()
                self.bump("models")
            out[m.id] = existing.id
        return out

    def _jobs(self, src: Session, datasets: dict[int, int], models: dict[int, int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for job in src.exec(select(Job).order_by(Job.id)).all():  # parents come before children
            existing = None
            if job.fingerprint:
                existing = self.t.exec(
                    select(Job).where(Job.kind == job.kind, Job.fingerprint == job.fingerprint).order_by(Job.id)
                ).first()
            if existing is None:
                values = _columns(job)
                values["dataset_id"] = datasets.get(job.dataset_id) if job.dataset_id else None
                values["model_id"] = models.get(job.model_id) if job.model_id else None
                values["parent_id"] = out.get(job.parent_id) if job.parent_id else None
                values["summary"] = {**job.summary, "merged_from": [self.source_name]}
                existing = Job(**values)
                self.t.add(existing)
                self.t.flush()
                self.bump("jobs")
            else:
                # Shards of one job: the merged job is only as finished as its least finished shard.
                if STATUS_RANK.get(job.status, 2) < STATUS_RANK.get(existing.status, 2):
                    existing.status = job.status
                existing.progress_done += job.progress_done
                existing.progress_total += job.progress_total
                merged_from = [*existing.summary.get("merged_from", []), self.source_name]
                existing.summary = {**existing.summary, "merged_from": merged_from}
                self.t.add(existing)
            out[job.id] = existing.id
        return out

    def _job_items(self, src: Session, jobs: dict[int, int], questions: dict[int, int]) -> None:
        values = [
            {**_columns(i), "job_id": jobs[i.job_id], "question_id": questions[i.question_id]}
            for i in src.exec(select(JobItem)).all()
        ]
        stmt = insert(JobItem).on_conflict_do_nothing(index_elements=["job_id", "question_id"])
        for chunk in _chunks(values):
            self.bump("job_items", self.t.exec(stmt.values(chunk)).rowcount or 0)  # type: ignore[call-overload]

    def _paths(self, src: Session, jobs: dict[int, int], questions: dict[int, int]) -> None:
        key = ["job_id", "question_id", "source", "branch", "sample"]
        values = [
            {**_columns(p), "job_id": jobs[p.job_id], "question_id": questions[p.question_id]}
            for p in src.exec(select(Path)).all()
        ]
        stmt = insert(Path)
        # Keep the target's decision; take the source's where the target has none.
        stmt = stmt.on_conflict_do_update(
            index_elements=key,
            set_={
                "decision": func.coalesce(Path.decision, stmt.excluded.decision),
                "decided_at": func.coalesce(Path.decided_at, stmt.excluded.decided_at),
            },
        )
        before = self.t.exec(select(func.count()).select_from(Path)).one()
        for chunk in _chunks(values):
            self.t.exec(stmt.values(chunk))  # type: ignore[call-overload]
        self.bump("paths", self.t.exec(select(func.count()).select_from(Path)).one() - before)

    def _metrics(self, src: Session, jobs: dict[int, int]) -> None:
        values = [{**_columns(m), "job_id": jobs[m.job_id]} for m in src.exec(select(Metric)).all()]
        stmt = insert(Metric).on_conflict_do_nothing(index_elements=["job_id", "step", "name"])
        for chunk in _chunks(values):
            self.bump("metrics", self.t.exec(stmt.values(chunk)).rowcount or 0)  # type: ignore[call-overload]

    def _checkpoints(self, src: Session, jobs: dict[int, int]) -> dict[int, int]:
        out = {}
        for c in src.exec(select(Checkpoint)).all():
            job_id = jobs[c.job_id]
            existing = self.t.exec(
                select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == c.step)
            ).first()
            if existing is None:
                existing = Checkpoint(**{**_columns(c), "job_id": job_id})
                self.t.add(existing)
                self.t.flush()
                self.bump("checkpoints")
            out[c.id] = existing.id
        return out

    def _evaluations(
        self,
        src: Session,
        jobs: dict[int, int],
        datasets: dict[int, int],
        questions: dict[int, int],
        checkpoints: dict[int, int],
    ) -> None:
        for ev in src.exec(select(Evaluation)).all():
            job_id = jobs[ev.job_id]
            existing = self.t.exec(
                select(Evaluation).where(
                    Evaluation.job_id == job_id, Evaluation.split == ev.split, Evaluation.model_ref == ev.model_ref
                )
            ).first()
            if existing is None:
                existing = Evaluation(
                    **{
                        **_columns(ev),
                        "job_id": job_id,
                        "dataset_id": datasets[ev.dataset_id],
                        "checkpoint_id": checkpoints.get(ev.checkpoint_id) if ev.checkpoint_id else None,
                    }
                )
                self.t.add(existing)
                self.t.flush()
                self.bump("evaluations")
            values = [
                {**_columns(p), "evaluation_id": existing.id, "question_id": questions[p.question_id]}
                for p in src.exec(select(Prediction).where(Prediction.evaluation_id == ev.id)).all()
            ]
            stmt = insert(Prediction).on_conflict_do_nothing(index_elements=["evaluation_id", "question_id"])
            for chunk in _chunks(values):
                self.bump("predictions", self.t.exec(stmt.values(chunk)).rowcount or 0)  # type: ignore[call-overload]

    def _events(self, src: Session, jobs: dict[int, int]) -> None:
        for e in src.exec(select(JobEvent).order_by(JobEvent.id)).all():
            self.t.add(JobEvent(**{**_columns(e), "job_id": jobs[e.job_id]}))

    def _teacher_cache(self, src: Session) -> None:
        values = [_columns(r) for r in src.exec(select(TeacherResponse)).all()]
        stmt = insert(TeacherResponse).on_conflict_do_nothing(index_elements=["key"])
        for chunk in _chunks(values):
            self.bump("teacher_responses", self.t.exec(stmt.values(chunk)).rowcount or 0)  # type: ignore[call-overload]


def _chunks(values: list[dict[str, Any]], size: int = 500):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def merge_workspaces(
    sources: list[FilePath], into: FilePath, echo: Callable[[str], None] = lambda _m: None
) -> dict[str, int]:
    """Merge ``sources`` into the workspace ``into`` (created if missing); returns rows added per table."""
    into = FilePath(into)
    for source in sources:
        if not FilePath(source).is_file():
            raise UserError(f"{source}: no such workspace")
        if FilePath(source).resolve() == into.resolve():
            raise UserError(f"{source}: cannot merge a workspace into itself")
    target: Engine = open_workspace(into)
    src_engines = [open_workspace(s, create=False) for s in sources]
    try:
        with session_scope(target) as t:
            merger = _Merger(t, echo)
            for source, database in zip(sources, src_engines, strict=True):
                merger.source_name = str(source)
                with Session(database) as src:
                    merger.merge(src)
                echo(f"merged {source}")
        return merger.counts
    finally:
        target.dispose()
        for database in src_engines:
            database.dispose()
