"""Read queries of the app: keyset-paged paths, training-set counts, metric series, evaluation tables.

Everything here is a short read through SQLAlchemy Core (no ORM objects) so that the app can call it from a
worker thread while a job writes. Paging is keyset (``WHERE id > ? ORDER BY id LIMIT n``) over the
``(job_id, ..., id)`` indexes of ``paths``: a page costs the same on the first and the 200,000th path.

Verdicts: a sample job's paths carry, on their rows, a display copy of the verdicts, passed and selected of the
sample job's current filter job (``summary["filter_job"]``); every filter job keeps its own in
``filter_verdicts``. The reads of a sample job use the rows; the reads of a filter job (``verdicts_job``, see
:func:`verdicts_job_id`) join its own rows (``LEFT JOIN filter_verdicts ON (filter job, path id)``, one primary
key lookup per path row the page visits), so a filter job always shows its own verdicts, whichever ran since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection, Engine

from db import curation, duplicates
from db.models import (
    Checkpoint,
    Dataset,
    FilterVerdict,
    Job,
    JobEvent,
    Metric,
    Model,
    Path,
    Prediction,
    Question,
    utcnow,
)
from db.vocabulary import FILTER, PATH_KINDS, RULES, TRAINING_KINDS  # noqa: F401  (used by the app)


# -- paths ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathFilter:
    """What the paths table shows. ``None`` means "any" for every field."""

    decision: str | None = None  # undecided | accepted | rejected | ignored
    passed: bool | None = None  # passed every rule / failed at least one
    selected: bool | None = None
    source: str | None = None  # self | teacher
    correct: bool | None = None
    search: str = ""  # substring of the question text
    question_id: int | None = None

    def describe(self) -> str:
        parts = []
        if self.decision:
            parts.append(f"decision={self.decision}")
        if self.passed is not None:
            parts.append("verdict=" + ("passed" if self.passed else "failed"))
        if self.selected is not None:
            parts.append("selected" if self.selected else "not selected")
        if self.source:
            parts.append(f"source={self.source}")
        if self.correct is not None:
            parts.append("correct" if self.correct else "incorrect")
        if self.search:
            parts.append(f"question~{self.search!r}")
        if self.question_id is not None:
            parts.append(f"question #{self.question_id}")
        return ", ".join(parts) if parts else "none"


@dataclass
class PathRow:
    id: int
    question_id: int
    question_index: int
    question: str
    gold: str
    source: str
    branch: int
    sample: int
    branch_token: str
    text: str
    tokens: int
    rep2: float | None
    perplexity: float | None
    confidence: float | None  # CoT-decoding's Δ of the answer (engine.sampling.paths.path_confidence)
    gold_logp: float | None  # log p(gold answer sentence | SERT sample of the path) (engine.filtering.gold)
    verdicts: dict[str, Any]
    passed: bool | None
    selected: bool
    answer: str | None
    correct: bool | None
    decision: str | None
    decided_at: datetime | None
    duplicate_of: int | None = None  # not a column: the original's id (db.duplicates), set by page_paths
    agreement: int | None = None  # not a column: :func:`answer_agreement`, set by page_paths


@dataclass
class Page:
    rows: list[PathRow]
    anchor: int  # the smallest id the page may start at (``id >= anchor``)
    has_prev: bool
    has_next: bool


_PATH_COLUMNS = (
    Path.id,
    Path.question_id,
    Question.index,
    Question.text,
    Question.answer,
    Path.source,
    Path.branch,
    Path.sample,
    Path.branch_token,
    Path.text,
    Path.tokens,
    Path.rep2,
    Path.perplexity,
    Path.confidence,
    Path.gold_logp,
    Path.verdicts,
    Path.passed,
    Path.selected,
    Path.answer,
    Path.correct,
    Path.decision,
    Path.decided_at,
)
#: Where the verdicts, passed and selected of ``_PATH_COLUMNS`` sit.
_VERDICT_AT = next(i for i, c in enumerate(_PATH_COLUMNS) if c is Path.verdicts)
_VERDICT_COLUMNS = slice(_VERDICT_AT, _VERDICT_AT + 3)


def _verdict_columns(verdicts_job: int | None) -> tuple:
    """The columns verdicts, passed, selected: the path rows' display copy (None), else the filter job's own rows
    (a path it has no row for shows as not filtered)."""
    if verdicts_job is None:
        return (Path.verdicts, Path.passed, Path.selected)
    return (FilterVerdict.verdicts, FilterVerdict.passed, func.coalesce(FilterVerdict.selected, False))


def _with_verdicts(stmt, verdicts_job: int | None):
    """``stmt`` (selecting from ``paths``) joined to the rows of filter job ``verdicts_job``, if given."""
    if verdicts_job is None:
        return stmt
    return stmt.outerjoin(
        FilterVerdict, and_(FilterVerdict.path_id == Path.id, FilterVerdict.filter_job_id == verdicts_job)
    )


#: Up to this many matching questions, a text search becomes ``question_id IN (ids)`` (index per question).
SEARCH_IN_LIMIT = 900


def _conditions(conn: Connection, job_id: int, flt: PathFilter, verdicts_job: int | None = None) -> list:
    cond: list = [Path.job_id == job_id]
    _verdicts, passed, selected = _verdict_columns(verdicts_job)
    if flt.decision == "undecided":
        cond.append(Path.decision.is_(None))  # type: ignore[union-attr]
    elif flt.decision:
        cond.append(Path.decision == flt.decision)
    if flt.passed is not None:
        cond.append(passed == flt.passed)
    if flt.selected is not None:
        cond.append(selected == flt.selected)
    if flt.source:
        cond.append(Path.source == flt.source)
    if flt.correct is not None:
        cond.append(Path.correct == flt.correct)
    if flt.question_id is not None:
        cond.append(Path.question_id == flt.question_id)
    if flt.search:
        pattern = "%" + flt.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matching = select(Question.id).where(Question.text.like(pattern, escape="\\"))  # type: ignore[attr-defined]
        ids = [r[0] for r in conn.execute(matching.limit(SEARCH_IN_LIMIT + 1))]
        if not ids:
            cond.append(Path.id < 0)  # type: ignore[operator]  # nothing matches: an empty id range, no scan
        elif len(ids) <= SEARCH_IN_LIMIT:
            cond.append(Path.question_id.in_(ids))  # type: ignore[attr-defined]
        else:
            cond.append(Path.question_id.in_(matching))  # type: ignore[attr-defined]
    return cond


def _row(r: Any) -> PathRow:
    return PathRow(*r)


def _page_select(cond: list, limit: int, descending: bool = False, verdicts_job: int | None = None):
    order = Path.id.desc() if descending else Path.id  # type: ignore[union-attr]
    columns = list(_PATH_COLUMNS)
    columns[_VERDICT_COLUMNS] = _verdict_columns(verdicts_job)
    stmt = select(*columns).join(Question, Question.id == Path.question_id)
    return _with_verdicts(stmt, verdicts_job).where(and_(*cond)).order_by(order).limit(limit)


def _ids(cond: list, verdicts_job: int | None):
    """``SELECT paths.id`` under ``cond`` (the filter job's rows joined where ``cond`` reads them)."""
    return _with_verdicts(select(Path.id), verdicts_job).where(and_(*cond))


def verdicts_job_id(conn: Connection, job_id: int) -> int | None:
    """The filter job whose own verdicts (``filter_verdicts``) the paths of ``job_id`` are shown with: a filter
    job's own; None for every other job (a sample job shows the display copy on its path rows, its current filter
    job's). The paths screen and ``paths list`` ask this beside :func:`paths_job_id`."""
    row = conn.execute(select(Job.kind).where(Job.id == job_id)).first()
    return job_id if row is not None and row[0] == FILTER else None


def page_paths(
    conn: Connection,
    job_id: int,
    flt: PathFilter,
    anchor: int = 0,
    size: int = 100,
    verdicts_job: int | None = None,
    cache: Any = None,
) -> Page:
    """The page of paths starting at ``id >= anchor`` (keyset, never OFFSET); each row carries its duplicate
    mark, read from the paths of the page's questions (``cache``: a :class:`db.page_marks.QuestionMarks` that
    keeps them per question between pages). ``verdicts_job``: show (and filter by) that filter job's own verdicts
    instead of the rows' display copy."""
    cond = _conditions(conn, job_id, flt, verdicts_job)
    rows = [_row(r) for r in conn.execute(_page_select([*cond, Path.id >= anchor], size + 1, False, verdicts_job))]
    has_next = len(rows) > size
    rows = rows[:size]
    if cache is not None and rows:
        marks, agree = cache.get(conn, job_id, {r.question_id for r in rows})
    else:
        marks = duplicates.find(conn, job_id, {r.question_id for r in rows}).of if rows else {}
        agree = answer_agreement(conn, job_id, {r.question_id for r in rows}) if rows else {}
    for r in rows:
        r.duplicate_of = marks.get(r.id)
        r.agreement = agreement_of(agree, r.question_id, r.source, r.answer)
    first = rows[0].id if rows else anchor
    has_prev = (
        conn.execute(_ids([*cond, Path.id < first], verdicts_job).order_by(Path.id.desc()).limit(1)).first()  # type: ignore[union-attr]
        is not None
    )
    return Page(rows, anchor, has_prev, has_next)


#: ``(question_id, source, parsed answer) -> paths``: what :func:`agreement_of` reads.
AnswerCounts = dict[tuple[int, str, str], int]


def answer_agreement(conn: Connection, job_id: int, question_ids: set[int] | None = None) -> AnswerCounts:
    """How many paths of each question of ``job_id`` (of one source) give each parsed answer: one grouped count
    over the ``(job_id, question_id, id)`` index, for the questions asked for (all: None)."""
    counts: AnswerCounts = {}
    base = (
        select(Path.question_id, Path.source, Path.answer, func.count())
        .where(Path.job_id == job_id, Path.answer.is_not(None))  # type: ignore[union-attr]
        .group_by(Path.question_id, Path.source, Path.answer)
    )
    if question_ids is None:
        chunks = [base]
    else:
        ids = sorted(question_ids)
        step = duplicates.CHUNK  # question ids per IN (...), below SQLite's limit of bound variables
        chunks = [base.where(Path.question_id.in_(ids[i : i + step])) for i in range(0, len(ids), step)]  # type: ignore[attr-defined]
    for stmt in chunks:
        for question_id, source, answer, n in conn.execute(stmt):
            counts[(question_id, source, answer)] = int(n)
    return counts


def agreement_of(counts: AnswerCounts, question_id: int, source: str, answer: str | None) -> int | None:
    """Self-consistency agreement, the one rule: how many of the question's paths in the same job (and of the same
    source) give the same parsed answer as this path, this path included; None when it gives none."""
    return None if answer is None else counts.get((question_id, source, answer), 0)


def previous_anchor(
    conn: Connection, job_id: int, flt: PathFilter, before: int, size: int = 100, verdicts_job: int | None = None
) -> int:
    """The anchor of the page that ends just before id ``before``."""
    cond = _conditions(conn, job_id, flt, verdicts_job)
    ids = conn.execute(_ids([*cond, Path.id < before], verdicts_job).order_by(Path.id.desc()).limit(size)).all()  # type: ignore[union-attr]
    return ids[-1][0] if ids else 0


def last_anchor(
    conn: Connection, job_id: int, flt: PathFilter, size: int = 100, verdicts_job: int | None = None
) -> int:
    cond = _conditions(conn, job_id, flt, verdicts_job)
    ids = conn.execute(_ids(cond, verdicts_job).order_by(Path.id.desc()).limit(size)).all()  # type: ignore[union-attr]
    return ids[-1][0] if ids else 0


def question_passed_undecided(
    conn: Connection, job_id: int, question_id: int, verdicts_job: int | None = None
) -> list[int]:
    """Ids of a question's paths that passed every rule and carry no decision yet (the bulk accept); the rules'
    verdicts of ``verdicts_job`` where given, else the rows' display copy."""
    _verdicts, passed, _selected = _verdict_columns(verdicts_job)
    cond = [
        Path.job_id == job_id,
        Path.question_id == question_id,
        passed == True,  # noqa: E712
        Path.decision.is_(None),  # type: ignore[union-attr]
    ]
    return [r[0] for r in conn.execute(_ids(cond, verdicts_job).order_by(Path.id))]


def decisions_of(conn: Connection, path_ids: list[int]) -> dict[int, str | None]:
    if not path_ids:
        return {}
    return dict(conn.execute(select(Path.id, Path.decision).where(Path.id.in_(path_ids))).all())  # type: ignore[union-attr, arg-type]


def paths_job_id(conn: Connection, job_id: int) -> int:
    """The job whose paths a job shows: a filter job shows its sample job's (the filter writes its verdicts on
    them), every other job its own. The paths screen, ``paths list`` and the exports all ask this."""
    row = conn.execute(select(Job.kind, Job.parent_id).where(Job.id == job_id)).first()
    if row is not None and row[0] == FILTER and row[1] is not None:
        return int(row[1])
    return job_id


def selected_by(filter_job_id: int):
    """``paths.id IN`` the paths filter job ``filter_job_id`` selected (its own rows, through the
    ``(filter_job_id, selected, path_id)`` index)."""
    return Path.id.in_(  # type: ignore[union-attr]
        select(FilterVerdict.path_id).where(
            FilterVerdict.filter_job_id == filter_job_id,
            FilterVerdict.selected == True,  # noqa: E712
        )
    )


def in_training_set(filter_job_id: int | None, choices: bool = True):
    """The one rule for "the training set" of stage 2 (DESIGN.md section 1): selected by the rules of filter job
    ``filter_job_id`` (its own rows in ``filter_verdicts``) unless a person rejected it, plus every path a person
    accepted. ``None``: the selection the path rows carry (the display copy of the sample job's current filter
    job), what the paths screen of a sample job counts. The SERT set (engine.training.datasets) and so
    ``export set`` are built with it; :func:`path_counts` counts the same rule, with the same selection
    (:func:`selected_by` for a filter job), through the decision index. The review screen's choices apply on top
    (:func:`db.curation.with_choices`: a chosen path alone, nothing for a question marked "no path"), unless
    ``choices`` is false (``filters.use_choices``: a study measuring the rules without them)."""
    selected = Path.selected == True if filter_job_id is None else selected_by(filter_job_id)  # noqa: E712
    base = or_(
        Path.decision == "accepted",
        and_(selected, or_(Path.decision.is_(None), Path.decision != "rejected")),  # type: ignore[union-attr]
    )
    return curation.with_choices(base) if choices else base


#: The window of the review speed the paths screen shows (decisions per minute over the last 5 minutes).
REVIEW_WINDOW_S = 300


@dataclass
class PathCounts:
    total: int = 0
    max_id: int = 0
    filtered: int = 0
    passed: int = 0
    selected: int = 0
    accepted: int = 0
    rejected: int = 0
    ignored: int = 0
    undecided: int = 0
    selected_kept: int = 0  # selected by the rules and not rejected
    accepted_extra: int = 0  # accepted by hand and not already counted as selected
    #: What training will use, the rule of :func:`in_training_set`: selected-not-rejected plus accepted by hand
    #: (= selected_kept + accepted_extra). The filter stage selects among the student's own paths only, and a
    #: job's paths come from one source (a sample job: self; a teacher job: teacher), so no source check is needed.
    training_set: int = 0
    correct: int | None = None  # counted only on request (teacher jobs: no index serves it)
    chosen: int = 0  # paths chosen on the review screen (one per question)
    no_path: int = 0  # paths of questions marked "no path is good enough" on the review screen
    curated_total: int | None = None  # the training set counted with the choices (db.curation), where any
    recent_decisions: int = 0  # decisions made in the last REVIEW_WINDOW_S seconds (review speed)
    coverage: dict[str, Any] | None = None  # engine.filtering.coverage of a sample job, when the screen asks


def max_path_id(conn: Connection, job_id: int) -> int:
    return int(conn.execute(select(func.coalesce(func.max(Path.id), 0)).where(Path.job_id == job_id)).scalar() or 0)


def path_counts(
    conn: Connection, job_id: int, with_correct: bool = False, verdicts_job: int | None = None
) -> PathCounts:
    """The training-set preview: grouped counts over covering indexes and small indexed counts, so that it stays
    cheap on a job of 200,000 paths. ``verdicts_job``: the filtered/passed/selected counts and the training set
    of that filter job's own verdicts (``filter_verdicts``), else of the rows' display copy."""
    c = PathCounts(max_id=max_path_id(conn, job_id))
    for decision, n in conn.execute(
        select(Path.decision, func.count()).where(Path.job_id == job_id).group_by(Path.decision)
    ):
        c.total += n
        if decision is None:
            c.undecided = n
        elif decision in ("accepted", "rejected", "ignored", "chosen"):
            setattr(c, decision, n)
        elif decision == "no-path":
            c.no_path = n
    if verdicts_job is None:
        by_passed = select(Path.passed, func.count()).where(Path.job_id == job_id).group_by(Path.passed)
        c.selected = _count(conn, Path.job_id == job_id, Path.selected == True)  # noqa: E712
        # coalesce() keeps SQLite on the decision index (hand decisions are few) instead of the selected one.
        is_selected = func.coalesce(Path.selected, 0) == 1
    else:
        own = FilterVerdict.filter_job_id == verdicts_job
        by_passed = select(FilterVerdict.passed, func.count()).where(own).group_by(FilterVerdict.passed)
        c.selected = int(
            conn.execute(select(func.count()).where(own, FilterVerdict.selected == True)).scalar() or 0  # noqa: E712
        )
        is_selected = selected_by(verdicts_job)
    for passed, n in conn.execute(by_passed):
        if passed is not None:
            c.filtered += n
            c.passed += n if passed else 0
    selected_rejected = _count(conn, Path.job_id == job_id, Path.decision == "rejected", is_selected)
    c.selected_kept = c.selected - selected_rejected
    c.accepted_extra = _count(conn, Path.job_id == job_id, Path.decision == "accepted", ~is_selected)
    # The rule of in_training_set, decomposed over indexes: counted as one OR over the job's rows it costs a pass
    # over all of them (64 ms on 40,000 paths against ~1 ms), on every decision (tests/test_layout.py: they agree).
    c.training_set = c.selected_kept + c.accepted_extra
    if c.chosen or c.no_path:  # the review screen's choices: the rule counted as a whole (db.curation)
        c.curated_total = curation.training_count(conn, job_id, in_training_set(verdicts_job))
        c.training_set = c.curated_total
    if with_correct:
        c.correct = _count(conn, Path.job_id == job_id, Path.correct == True)  # noqa: E712
    cutoff = utcnow() - timedelta(seconds=REVIEW_WINDOW_S)
    c.recent_decisions = _count(conn, Path.job_id == job_id, Path.decision.is_not(None), Path.decided_at >= cutoff)  # type: ignore[union-attr, operator]
    return c


def _count(conn: Connection, *cond) -> int:
    return int(conn.execute(select(func.count()).select_from(Path).where(*cond)).scalar() or 0)


# -- jobs and the home screen ----------------------------------------------------------------------------
@dataclass
class JobInfo:
    id: int
    kind: str
    status: str
    label: str
    dataset: str
    parent_id: int | None
    progress_done: int
    progress_total: int
    message: str
    error: str | None
    pid: int | None
    host: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> str:
        if not self.progress_total:
            return ""
        pct = 100.0 * self.progress_done / self.progress_total
        return f"{self.progress_done}/{self.progress_total} ({pct:.0f}%)"


def _job_select():
    return select(
        Job.id,
        Job.kind,
        Job.status,
        Job.label,
        func.coalesce(Dataset.name, ""),
        Job.parent_id,
        Job.progress_done,
        Job.progress_total,
        Job.message,
        Job.error,
        Job.pid,
        Job.host,
        Job.created_at,
        Job.started_at,
        Job.finished_at,
        Job.config,
        Job.summary,
    ).outerjoin(Dataset, Dataset.id == Job.dataset_id)


def job_info(conn: Connection, job_id: int) -> JobInfo | None:
    row = conn.execute(_job_select().where(Job.id == job_id)).first()
    return JobInfo(*row) if row else None


def list_job_infos(conn: Connection, limit: int = 500) -> list[JobInfo]:
    return [JobInfo(*r) for r in conn.execute(_job_select().order_by(Job.id.desc()).limit(limit))]  # type: ignore[union-attr]


@dataclass
class HomeSnapshot:
    datasets: list[dict]
    models: list[dict]
    jobs: list[JobInfo]
    checkpoints: list[dict]


def home_snapshot(engine: Engine) -> HomeSnapshot:
    """Everything the home screen shows, read in one short transaction."""
    with engine.connect() as conn:
        counts: dict[int, dict[str, int]] = {}
        for dataset_id, split, n in conn.execute(
            select(Question.dataset_id, Question.split, func.count()).group_by(Question.dataset_id, Question.split)
        ):
            counts.setdefault(dataset_id, {})[split] = n
        datasets = [
            {
                "id": d.id,
                "name": d.name,
                "task": d.task,
                "answer_type": d.answer_type,
                "source": d.source,
                "train": counts.get(d.id, {}).get("train", 0),
                "test": counts.get(d.id, {}).get("test", 0),
            }
            for d in conn.execute(select(Dataset).order_by(Dataset.id))  # type: ignore[arg-type]
        ]
        models = [
            {"name": m.name, "source": m.source, "path": m.local_path}
            for m in conn.execute(select(Model).order_by(Model.id))  # type: ignore[arg-type]
        ]
        jobs = list_job_infos(conn)
        checkpoints = [
            {"id": c.id, "job": c.job_id, "step": c.step, "final": bool(c.is_final), "path": c.path}
            for c in conn.execute(select(Checkpoint).order_by(Checkpoint.id.desc()).limit(500))  # type: ignore[arg-type, union-attr]
        ]
    return HomeSnapshot(datasets, models, jobs, checkpoints)


# -- the training monitor -----------------------------------------------------------------------------------
def metric_rows(conn: Connection, job_ids: list[int], after_id: int = 0) -> list[tuple[int, int, int, str, float]]:
    """New metric rows ``(id, job_id, step, name, value)`` of the given jobs, oldest first."""
    if not job_ids:
        return []
    return [
        tuple(r)  # type: ignore[misc]
        for r in conn.execute(
            select(Metric.id, Metric.job_id, Metric.step, Metric.name, Metric.value)
            .where(Metric.job_id.in_(job_ids), Metric.id > after_id)  # type: ignore[attr-defined]
            .order_by(Metric.id)
        )
    ]


def job_events(conn: Connection, job_id: int, limit: int = 200) -> list[tuple[int, datetime, str, str]]:
    """The last ``limit`` log lines of a job, oldest first."""
    rows = conn.execute(
        select(JobEvent.id, JobEvent.time, JobEvent.level, JobEvent.message)
        .where(JobEvent.job_id == job_id)
        .order_by(JobEvent.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    ).all()
    return [tuple(r) for r in reversed(rows)]  # type: ignore[misc]


def job_checkpoints(conn: Connection, job_id: int) -> list[tuple[int, str, bool]]:
    return [
        tuple(r)  # type: ignore[misc]
        for r in conn.execute(
            select(Checkpoint.step, Checkpoint.path, Checkpoint.is_final)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step)
        )
    ]


# -- results (the evaluations and Table II: engine.evaluation.report) ---------------------------------------
@dataclass
class PredictionPair:
    question_id: int
    question_index: int
    question: str
    gold: str
    a: dict[str, Any] | None
    b: dict[str, Any] | None


def _predictions(conn: Connection, evaluation_id: int) -> dict[int, dict[str, Any]]:
    out = {}
    for r in conn.execute(
        select(
            Prediction.question_id,
            Prediction.output,
            Prediction.answer,
            Prediction.correct,
            Prediction.well_formed,
            Prediction.tokens,
            Prediction.scores,
        ).where(Prediction.evaluation_id == evaluation_id)
    ):
        out[r[0]] = {
            "output": r[1],
            "answer": r[2],
            "correct": bool(r[3]),
            "well_formed": bool(r[4]),
            "tokens": r[5],
            "scores": r[6] or {},
        }
    return out


def prediction_pairs(conn: Connection, eval_a: int, eval_b: int | None = None) -> list[PredictionPair]:
    """Per-question predictions of one evaluation, or of two side by side (joined on the question)."""
    a = _predictions(conn, eval_a)
    b = _predictions(conn, eval_b) if eval_b is not None else {}
    qids = sorted(set(a) | set(b))
    if not qids:
        return []
    questions = {
        r[0]: r[1:]
        for r in conn.execute(
            select(Question.id, Question.index, Question.text, Question.answer).where(Question.id.in_(qids))  # type: ignore[union-attr]
        )
    }
    pairs = [
        PredictionPair(qid, questions[qid][0], questions[qid][1], questions[qid][2], a.get(qid), b.get(qid))
        for qid in qids
        if qid in questions
    ]
    pairs.sort(key=lambda p: p.question_index)
    return pairs
