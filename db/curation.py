"""Curation one question at a time (the review screen): what a choice means, and the reads the screen makes.

A choice is stored as path decisions (db/vocabulary.py), so that the decision writer, its journal and undo carry
it like any other decision:

- ``chosen`` on one path: that path is its question's training path, alone. Choosing another path of the
  question, or "no path", clears it in the same batch.
- ``no-path`` on every path of a question: no path is good enough; the question trains on nothing from SERT.
  Choosing a path clears the marks in the same batch.

The training-set rule (:func:`db.app_queries.in_training_set`) is the paper's rule wrapped by
:func:`with_choices`: a path with ``chosen`` is in; a path of a question that has a ``chosen`` path is out; a path
marked ``no-path`` is out; every other path keeps the paper's rule (selected unless rejected, plus accepted by
hand). Like all of db/, this module imports nothing from engine/ or sert_tui/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from db import duplicates
from db.models import Path, Question
from db.vocabulary import ACCEPTED, CHOICES, CHOSEN, NO_PATH


# -- the rule ---------------------------------------------------------------------------------------------
def chosen_sibling():
    """True for a path whose question (in the same job) has a ``chosen`` path. The sibling's decision is read
    through ``coalesce`` so that SQLite walks the (job_id, question_id) index: 25 rows, not every decision."""
    sibling = aliased(Path)
    return exists().where(
        sibling.job_id == Path.job_id,
        sibling.question_id == Path.question_id,
        func.coalesce(sibling.decision, "") == CHOSEN,
    )


def with_choices(base):
    """The training-set rule ``base`` (the paper's: selected unless rejected, plus accepted) with the review
    screen's choices on top: the chosen path alone where a question has one, nothing where it is marked
    ``no-path``, ``base`` elsewhere. The cheap terms come first: SQLite evaluates the sibling lookup only for the
    few paths that ``base`` keeps."""
    return or_(
        Path.decision == CHOSEN,
        and_(base, func.coalesce(Path.decision, "") != NO_PATH, ~chosen_sibling()),
    )


def training_count(conn: Connection, job_id: int, rule) -> int:
    """How many paths of ``job_id`` the rule keeps: the selected ones (their index) plus the ones decided by hand
    outside the selection (the decision index); no path outside those two can be in the set."""
    selected = _count(conn, Path.job_id == job_id, Path.selected == True, rule)  # noqa: E712
    by_hand = _count(
        conn,
        Path.job_id == job_id,
        Path.decision.in_((ACCEPTED, CHOSEN)),  # type: ignore[union-attr]
        func.coalesce(Path.selected, 0) == 0,
        rule,
    )
    return selected + by_hand


def _count(conn: Connection, *cond) -> int:
    return int(conn.execute(select(func.count()).select_from(Path).where(*cond)).scalar() or 0)


# -- the queue --------------------------------------------------------------------------------------------
#: The orders of the review queue: name -> what the screen says.
ORDERS: dict[str, str] = {
    "question": "by question",
    "disagree": "survivors disagree on the answer first",
    "rule_wrong": "the rule's pick wrong but another survivor right first",
}


@dataclass(frozen=True)
class QueueItem:
    question_id: int
    position: int
    answers: int  # distinct parsed answers among the survivors
    pick_wrong: bool  # the rule's pick (the selected path) is incorrect
    survivor_right: bool  # a survivor gives the gold answer


def queue(conn: Connection, job_id: int, order: str = "question") -> list[QueueItem]:
    """The questions of ``job_id`` in review order (:data:`ORDERS`), ties in question order: one grouped read."""
    survivor = Path.passed == True  # noqa: E712
    rows = conn.execute(
        select(
            Path.question_id,
            Question.position,
            func.count(func.distinct(case((survivor, Path.answer)))),
            func.max(case((Path.selected == True, case((Path.correct == False, 1), else_=0)), else_=0)),  # noqa: E712
            func.max(case((and_(survivor, Path.correct == True), 1), else_=0)),  # noqa: E712
        )
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id)
        .group_by(Path.question_id)
    ).all()
    items = [QueueItem(int(q), int(pos), int(n or 0), bool(w), bool(r)) for q, pos, n, w, r in rows]
    items.sort(key=lambda i: (i.position, i.question_id))
    if order == "disagree":
        items.sort(key=lambda i: i.answers <= 1)
    elif order == "rule_wrong":
        items.sort(key=lambda i: not (i.pick_wrong and i.survivor_right))
    return items


def done_questions(conn: Connection, job_id: int) -> dict[int, tuple[str, int | None]]:
    """Questions with a choice: question id -> (``chosen``, path id) or (``no-path``, None); the decision index."""
    out: dict[int, tuple[str, int | None]] = {}
    for qid, pid, decision in conn.execute(
        select(Path.question_id, Path.id, Path.decision).where(
            Path.job_id == job_id,
            Path.decision.in_(CHOICES),  # type: ignore[union-attr]
        )
    ):
        if decision == CHOSEN or qid not in out:
            out[qid] = (CHOSEN, pid) if decision == CHOSEN else (NO_PATH, None)
    return out


# -- one question -----------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One path as the review screen shows it."""

    id: int
    branch: int
    sample: int
    text: str
    tokens: int
    rep2: float | None
    perplexity: float | None
    confidence: float | None
    passed: bool | None
    selected: bool
    answer: str | None
    correct: bool | None
    decision: str | None
    gold_logp: float | None = None  # the gold-likelihood score, where the workspace records one
    duplicate_of: int | None = None
    agreement: int | None = None


@dataclass
class QuestionView:
    question_id: int
    index: int
    text: str
    gold: str
    paths: list[Candidate] = field(default_factory=list)

    @property
    def survivors(self) -> list[Candidate]:
        return [p for p in self.paths if p.passed]


def _gold_logp_column() -> Any:
    """``paths.gold_logp`` where the schema has it (another change adds it), else NULL."""
    column = getattr(Path, "gold_logp", None)
    return column if column is not None else literal(None)


def question_view(conn: Connection, job_id: int, question_id: int) -> QuestionView | None:
    """A question and all its paths (the student's own) in branch/sample order, with agreement and duplicate
    marks: three reads over the (job_id, question_id) index."""
    q = conn.execute(
        select(Question.id, Question.index, Question.text, Question.answer).where(Question.id == question_id)
    ).first()
    if q is None:
        return None
    view = QuestionView(int(q[0]), int(q[1]), q[2], q[3])
    rows = conn.execute(
        select(
            Path.id,
            Path.branch,
            Path.sample,
            Path.text,
            Path.tokens,
            Path.rep2,
            Path.perplexity,
            Path.confidence,
            Path.passed,
            Path.selected,
            Path.answer,
            Path.correct,
            Path.decision,
            _gold_logp_column(),
        )
        .where(Path.job_id == job_id, Path.question_id == question_id, Path.source == "self")
        .order_by(Path.branch, Path.sample, Path.id)
    ).all()
    view.paths = [Candidate(*r) for r in rows]
    if view.paths:
        marks = duplicates.find(conn, job_id, [question_id]).of
        counts: dict[str, int] = {}
        for p in view.paths:
            if p.answer is not None:
                counts[p.answer] = counts.get(p.answer, 0) + 1
        for p in view.paths:
            p.duplicate_of = marks.get(p.id)
            p.agreement = None if p.answer is None else counts[p.answer]
    return view


def in_review_order(paths: list[Candidate]) -> list[Candidate]:
    """The order the review screen numbers candidates in: the rule's pick first, then by rep-2 (the paper's
    order), branch, sample, id."""
    return sorted(paths, key=lambda p: (not p.selected, p.rep2 is None, p.rep2 or 0.0, p.branch, p.sample, p.id))


def choice_changes(paths: list[tuple[int, str | None]], choice: int | None) -> list[tuple[int, str | None]]:
    """The decisions that record a choice on a question whose paths are ``(id, decision now)``: ``choice`` = a
    path id (it becomes ``chosen``; another ``chosen`` or a ``no-path`` mark of the question is cleared), or None
    (no path is good enough: every path gets ``no-path``). Decisions that would not change are left out."""
    changes: list[tuple[int, str | None]] = []
    for pid, decision in paths:
        if choice is None:
            want: str | None = NO_PATH
        elif pid == choice:
            want = CHOSEN
        else:
            want = None if decision in CHOICES else decision
        if want != decision:
            changes.append((pid, want))
    return changes


def question_state(paths: list[tuple[int, str | None]]) -> tuple[str, int | None] | None:
    """(``chosen``, path id), (``no-path``, None) or None (no choice yet) of a question's ``(id, decision)``."""
    for pid, decision in paths:
        if decision == CHOSEN:
            return CHOSEN, pid
    if paths and any(decision == NO_PATH for _pid, decision in paths):
        return NO_PATH, None
    return None


def trains_on(paths: list[tuple[int, str | None, bool]]) -> list[int]:
    """The ids of a question's ``(id, decision, selected)`` paths that the training-set rule keeps: the same rule
    as :func:`with_choices` over :func:`db.app_queries.in_training_set`, for one question in memory (what the
    review screen says; the tests hold the two to each other)."""
    chosen = [pid for pid, decision, _selected in paths if decision == CHOSEN]
    if chosen:
        return chosen
    return [
        pid
        for pid, decision, selected in paths
        if decision == ACCEPTED or (selected and decision not in ("rejected", NO_PATH))
    ]
