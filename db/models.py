"""SQLModel tables of a sert-tui workspace.

The database is the bus between the engine (writer, one per job) and the app (reader). Unique keys make
re-running or resuming a job idempotent; the indexes serve the pages the app scrolls through.
Every change here needs an alembic revision under ``db/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    task: str  # e.g. strategy_qa, coin_flip, basic_arithmetic
    answer_type: str  # yes_no | choice | number | string (see engine.answers)
    source: str  # reasoning-teacher | jsonl | hf | generated
    origin: str = ""  # file, directory or generator that produced it
    created_at: datetime = Field(default_factory=utcnow)
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Question(SQLModel, table=True):
    __tablename__ = "questions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "index", name="uq_question_dataset_index"),
        Index("ix_questions_dataset_split_position", "dataset_id", "split", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="datasets.id", ondelete="CASCADE")
    split: str  # train | test | ...
    index: int  # the sample index in the source dataset
    position: int  # order inside its split (the split file's order)
    text: str
    answer: str  # gold answer, normalised for its answer type
    choices: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Model(SQLModel, table=True):
    __tablename__ = "models"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    source: str  # bundled | hub | local | checkpoint
    local_path: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """One run of one stage, with a frozen copy of its config."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_status", "kind", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # sample | filter | self-train | distill | finetune | teacher | eval
    status: str = "pending"  # pending | running | completed | failed | cancelled
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    dataset_id: int | None = Field(default=None, foreign_key="datasets.id")
    parent_id: int | None = Field(default=None, foreign_key="jobs.id")  # lineage (filter -> sample, ...)
    model_id: int | None = Field(default=None, foreign_key="models.id")
    label: str = ""
    fingerprint: str = Field(default="", index=True)  # hash of the config parts that define the result
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    pid: int | None = None
    host: str = ""
    progress_done: int = 0
    progress_total: int = 0
    message: str = ""  # last progress line
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class JobItem(SQLModel, table=True):
    """Per-question completion marker of a job: what makes a resumed job skip finished work."""

    __tablename__ = "job_items"
    __table_args__ = (UniqueConstraint("job_id", "question_id", name="uq_job_item"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    question_id: int = Field(foreign_key="questions.id", ondelete="CASCADE")
    status: str = "done"  # done | failed
    attempts: int = 1
    reason: str = ""
    updated_at: datetime = Field(default_factory=utcnow)


class Path(SQLModel, table=True):
    """A reasoning path: sampled from the student (source self) or written by the teacher."""

    __tablename__ = "paths"
    __table_args__ = (
        UniqueConstraint("job_id", "question_id", "source", "branch", "sample", name="uq_path_key"),
        Index("ix_paths_job_id", "job_id", "id"),
        Index("ix_paths_job_decision", "job_id", "decision", "id"),
        Index("ix_paths_job_passed", "job_id", "passed", "id"),
        Index("ix_paths_job_selected", "job_id", "selected", "id"),
        Index("ix_paths_job_question", "job_id", "question_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE")
    question_id: int = Field(foreign_key="questions.id", ondelete="CASCADE")
    source: str = "self"  # self | teacher
    branch: int = 0  # first-token branch, 0 = most probable
    sample: int = 0
    branch_token: str = ""
    text: str = ""
    tokens: int = 0
    mean_logprob: float | None = None
    perplexity: float | None = None
    rep2: float | None = None
    # CoT-decoding's Δ: mean p(top-1) - p(top-2) over the answer's tokens (engine.sampling.paths.path_confidence)
    confidence: float | None = None
    # log p(" So the answer is {gold}." | SERT training prompt + path) under the student, summed over the answer
    # sentence's tokens (engine.filtering.gold); scored by a filter job with select = gold_likelihood, survivors only
    gold_logp: float | None = None
    verdicts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    passed: bool | None = None  # every rule passed (None: not filtered yet)
    selected: bool = False
    answer: str | None = None  # answer parsed from the text
    correct: bool | None = None
    decision: str | None = None  # accepted | rejected | ignored | None
    decided_at: datetime | None = None  # when the decision was last set or cleared (None: never decided)
    created_at: datetime = Field(default_factory=utcnow)


class FilterVerdict(SQLModel, table=True):
    """One filter job's judgement of one path: every rule's verdict, passed, selected.

    Each filter job keeps its own rows, so two filter jobs over one sample job (other thresholds, another
    selection rule) never overwrite each other: the training set, the exports and the reports of a filter job read
    these. The path rows carry a display copy of the sample job's current filter job's (``summary["filter_job"]``),
    which the paths screen pages through; people's decisions and the parsed answer stay on the path rows.
    """

    __tablename__ = "filter_verdicts"
    __table_args__ = (
        Index("ix_filter_verdicts_job_selected", "filter_job_id", "selected", "path_id"),
        Index("ix_filter_verdicts_job_passed", "filter_job_id", "passed", "path_id"),
        Index("ix_filter_verdicts_path", "path_id"),  # a deleted path finds its rows (ON DELETE CASCADE)
    )

    filter_job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", primary_key=True)
    path_id: int = Field(foreign_key="paths.id", ondelete="CASCADE", primary_key=True)
    verdicts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    passed: bool = False  # every rule passed
    selected: bool = False


class Metric(SQLModel, table=True):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "step", "name", name="uq_metric"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    step: int
    name: str
    value: float
    time: datetime = Field(default_factory=utcnow)


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoint"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    step: int
    path: str
    is_final: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Evaluation(SQLModel, table=True):
    __tablename__ = "evaluations"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    checkpoint_id: int | None = Field(default=None, foreign_key="checkpoints.id")
    model_ref: str = ""  # "default", a hub id / path, or a checkpoint path
    label: str = ""  # zero-shot | Finetune | SERT | RD | SERT+RD
    dataset_id: int = Field(foreign_key="datasets.id")
    split: str = "test"
    n: int = 0
    acc: float | None = None
    fmt: float | None = None
    len: float | None = None
    rep: float | None = None
    scores: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Prediction(SQLModel, table=True):
    """One evaluated question: what the model wrote and how it was scored."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("evaluation_id", "question_id", name="uq_prediction"),)

    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluations.id", ondelete="CASCADE", index=True)
    question_id: int = Field(foreign_key="questions.id", ondelete="CASCADE")
    output: str = ""
    answer: str | None = None
    correct: bool = False
    well_formed: bool = False
    tokens: int = 0
    scores: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class JobEvent(SQLModel, table=True):
    """Log lines of a job, for the app's log pane."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    time: datetime = Field(default_factory=utcnow)
    level: str = "info"
    message: str = ""


class TeacherResponse(SQLModel, table=True):
    """Response cache of the teacher: one row per (base_url, model, prompt, parameters) key."""

    __tablename__ = "teacher_responses"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # sha256 of the request identity
    base_url: str
    model: str
    prompt: str
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime = Field(default_factory=utcnow)
