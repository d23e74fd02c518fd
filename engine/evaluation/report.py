"""The run comparison: one row per evaluation with its intervals, the majority baseline, the paper's Table II
pivot and paired comparisons. ``sert-tui report runs|compare`` and the app's results screen call these same
functions.

Reads go through SQLAlchemy Core on a ``Connection`` (no ORM objects), so the app can call them from a worker
thread while a job writes. Nothing here imports torch.

- Finished work only: an eval job writes its evaluation row as it runs, so ``evaluations`` keeps the
  evaluations of *completed* eval jobs (``all_evaluations`` has every one). A failed, cancelled or still running
  evaluation never takes the place of a completed one; ``unfinished_notes`` names those newer than what a
  report shows (or with nothing completed to show), for the reports to print beside their tables.
- ``acc_ci`` / ``fmt_ci``: 95% Wilson score intervals of Acc and Fmt (engine.evaluation.stats).
- The ``majority`` row of a (dataset, split): the accuracy of always answering the most common gold answer of
  the questions evaluated there (the union of the questions its evaluations answered).
- Table II: one line per (student, dataset, split), one column per label, the newest evaluation of a label.
- ``compare``: two labels on the questions both answered, per (student, dataset, split), through
  ``stats.clustered_compare`` with one outcome per question on each side (one evaluation each): difference of
  accuracy, bootstrap interval over questions, sign-flip permutation p-value on d_q, which with one seed is
  exact McNemar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from db.models import Checkpoint, Dataset, Evaluation, Job, Prediction, Question
from db.vocabulary import MAJORITY, RD, SERT, SERT_RD, TABLE_ORDER, UNLABELLED, ZERO_SHOT, label_round
from engine.evaluation.stats import (
    Clustered,
    clustered_compare,
    majority,
    one_outcome,
    share_interval,
    wilson_interval,
)

#: Keys of ``report runs --json``.
JSON_KEYS = ("label", "checkpoint", "dataset", "split", "n", "acc", "acc_ci", "fmt", "fmt_ci", "len", "rep")
#: Keys of ``report compare --json``.
COMPARE_KEYS = ("dataset", "split", "a", "b", "n", "diff", "diff_ci", "p_value")
#: How ``compare`` tests a difference, as the reports name it.
COMPARE_TEST = "sign-flip permutation on d_q (exact McNemar with one seed)"
#: What ``report compare`` compares without --a/--b: (a, b), difference acc(a) - acc(b).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    (SERT, "Finetune"),
    (SERT, ZERO_SHOT),
    (SERT_RD, RD),
    (RD, ZERO_SHOT),
)


@dataclass
class EvalRow:
    """One evaluation as the reports show it."""

    id: int
    job_id: int
    label: str
    student: str
    model_ref: str
    checkpoint: str | None
    checkpoint_step: int | None
    dataset_id: int
    dataset: str
    split: str
    n: int
    acc: float | None
    fmt: float | None
    len: float | None
    rep: float | None
    scores: dict[str, Any]
    status: str
    created_at: Any = None
    acc_ci: tuple[float, float] | None = None
    fmt_ci: tuple[float, float] | None = None
    answer: str | None = None  # the majority row's constant answer

    def as_json(self) -> dict[str, Any]:
        out = {
            "label": self.label,
            "checkpoint": self.checkpoint,
            "dataset": self.dataset,
            "split": self.split,
            "n": self.n,
            "acc": self.acc,
            "acc_ci": list(self.acc_ci) if self.acc_ci else None,
            "fmt": self.fmt,
            "fmt_ci": list(self.fmt_ci) if self.fmt_ci else None,
            "len": self.len,
            "rep": self.rep,
        }
        out.update({"student": self.student, "evaluation": self.id or None, "job": self.job_id or None})
        if self.label == MAJORITY:
            out["answer"] = self.answer
        return out


#: The status of an eval job whose evaluation the reports show.
FINISHED = "completed"


def all_evaluations(conn: Connection) -> list[EvalRow]:
    """Every evaluation, oldest first, with its intervals and its eval job's status (finished or not)."""
    rows = conn.execute(
        select(
            Evaluation.id,
            Evaluation.job_id,
            Evaluation.label,
            Job.config,
            Evaluation.model_ref,
            Checkpoint.path,
            Checkpoint.step,
            Evaluation.dataset_id,
            func.coalesce(Dataset.name, ""),
            Evaluation.split,
            Evaluation.n,
            Evaluation.acc,
            Evaluation.fmt,
            Evaluation.len,
            Evaluation.rep,
            Evaluation.scores,
            Job.status,
            Evaluation.created_at,
        )
        .join(Job, Job.id == Evaluation.job_id)
        .outerjoin(Dataset, Dataset.id == Evaluation.dataset_id)
        .outerjoin(Checkpoint, Checkpoint.id == Evaluation.checkpoint_id)
        .order_by(Evaluation.id)
    ).all()
    out = []
    for r in rows:
        config = r[3] or {}
        student = str((config.get("student") or {}).get("model", ""))
        row = EvalRow(
            id=r[0],
            job_id=r[1],
            label=r[2] or UNLABELLED,
            student=student,
            model_ref=r[4],
            checkpoint=r[5] if r[5] is not None else r[4],
            checkpoint_step=r[6],
            dataset_id=r[7],
            dataset=r[8],
            split=r[9],
            n=r[10],
            acc=r[11],
            fmt=r[12],
            len=r[13],
            rep=r[14],
            scores=r[15] or {},
            status=r[16],
            created_at=r[17],
        )
        row.acc_ci = share_interval(row.acc, row.n)
        row.fmt_ci = share_interval(row.fmt, row.n)
        out.append(row)
    return out


def evaluations(conn: Connection) -> list[EvalRow]:
    """The evaluations of completed eval jobs, oldest first, with their intervals: what every report shows."""
    return [r for r in all_evaluations(conn) if r.status == FINISHED]


@dataclass
class UnfinishedNote:
    """An evaluation of an eval job that has not completed (failed, cancelled, running, pending), newer than the
    completed evaluation shown in its place (``shown``), or with no completed one of its line and label."""

    evaluation: int
    job: int
    status: str
    label: str
    student: str
    dataset: str
    split: str
    shown: int | None

    def text(self) -> str:
        what = (
            f"evaluation {self.evaluation} (job {self.job}, {self.status}): {self.label} on {self.dataset}/{self.split}"
        )
        if self.shown is None:
            return f"{what} is not shown: its job has not completed"
        return f"{what} is newer than the one shown (evaluation {self.shown})"


def unfinished(rows: list[EvalRow]) -> tuple[list[EvalRow], list[UnfinishedNote]]:
    """``all_evaluations`` rows → (the completed ones, the notes on unfinished ones newer than the completed
    evaluation of the same Table II cell (student, dataset, split, label), or with none completed). An
    unfinished evaluation older than a completed one of its cell is superseded and not noted."""
    done = [r for r in rows if r.status == FINISHED]
    newest: dict[tuple[str, str, str, str], int] = {}
    for r in done:
        newest[(r.student, r.dataset, r.split, r.label)] = r.id  # ascending ids: the last is the newest
    notes = []
    for r in rows:
        if r.status == FINISHED:
            continue
        shown = newest.get((r.student, r.dataset, r.split, r.label))
        if shown is None or r.id > shown:
            notes.append(UnfinishedNote(r.id, r.job_id, r.status, r.label, r.student, r.dataset, r.split, shown))
    return done, notes


def unfinished_notes(conn: Connection) -> list[UnfinishedNote]:
    """The notes of :func:`unfinished` for this workspace."""
    return unfinished(all_evaluations(conn))[1]


def majority_of(conn: Connection, eval_ids: list[int]) -> tuple[str | None, int, int]:
    """The majority answer of the questions these evaluations answered, how many have it, and how many there are."""
    golds = [
        g
        for (g,) in conn.execute(
            select(Question.answer)
            .where(
                Question.id.in_(  # type: ignore[union-attr]
                    select(Prediction.question_id)
                    .where(Prediction.evaluation_id.in_(eval_ids))  # type: ignore[attr-defined]
                    .distinct()
                )
            )
            .order_by(Question.id)
        )
    ]
    return majority(golds)


def majority_rows(conn: Connection, rows: list[EvalRow]) -> list[EvalRow]:
    """One ``majority`` row per evaluated (dataset, split), over the questions its evaluations answered."""
    out = []
    seen: dict[tuple[int, str], list[int]] = {}
    for r in rows:
        seen.setdefault((r.dataset_id, r.split), []).append(r.id)
    for (dataset_id, split), eval_ids in seen.items():
        answer, count, n = majority_of(conn, eval_ids)
        if not n:
            continue
        name = next(r.dataset for r in rows if r.dataset_id == dataset_id)
        out.append(
            EvalRow(
                id=0,
                job_id=0,
                label=MAJORITY,
                student="",
                model_ref="",
                checkpoint=None,
                checkpoint_step=None,
                dataset_id=dataset_id,
                dataset=name,
                split=split,
                n=n,
                acc=count / n,
                fmt=None,
                len=None,
                rep=None,
                scores={},
                status="",
                acc_ci=wilson_interval(count, n),
                answer=answer,
            )
        )
    return out


def run_rows(conn: Connection) -> list[EvalRow]:
    """``report runs``: every evaluation of a completed eval job, then the majority rows."""
    rows = evaluations(conn)
    return rows + majority_rows(conn, rows)


def table_labels(rows: list[EvalRow]) -> list[str]:
    """The label columns present: the paper's order first (each label followed by its later self-training rounds,
    "SERT r2", "SERT r3", ...), then any others, the majority baseline last."""
    present = {r.label for r in rows}
    rounds: dict[str, list[tuple[int, str]]] = {}
    for lbl in present:
        head, round_no = label_round(lbl)
        if round_no > 1 and head in TABLE_ORDER:
            rounds.setdefault(head, []).append((round_no, lbl))
    ordered = []
    for lbl in TABLE_ORDER:
        later = [name for _n, name in sorted(rounds.get(lbl, []))]
        ordered += ([lbl] if lbl in present else []) + later
    others = sorted(present - set(ordered) - {MAJORITY})
    return ordered + others + ([MAJORITY] if MAJORITY in present else [])


@dataclass
class TableLine:
    student: str
    dataset: str
    split: str
    cells: dict[str, EvalRow]  # label -> the newest evaluation of that label


def table_two(rows: list[EvalRow]) -> tuple[list[str], list[TableLine]]:
    """Table II: the label columns and one line per (student, dataset, split) with the newest evaluation per
    label. The majority row of a (dataset, split) joins every student's line of it."""
    labels = table_labels(rows)
    lines: dict[tuple[str, str, str], TableLine] = {}
    for r in rows:
        if r.label == MAJORITY:
            continue
        key = (r.student, r.dataset, r.split)
        lines.setdefault(key, TableLine(*key, cells={})).cells[r.label] = r
    for r in rows:
        if r.label == MAJORITY:
            for line in lines.values():
                if (line.dataset, line.split) == (r.dataset, r.split):
                    line.cells[MAJORITY] = r
    return labels, list(lines.values())


def outcomes(conn: Connection, evaluation_id: int) -> dict[int, bool]:
    """Question id → correct, for one evaluation."""
    return {
        q: bool(c)
        for q, c in conn.execute(
            select(Prediction.question_id, Prediction.correct).where(Prediction.evaluation_id == evaluation_id)
        )
    }


@dataclass
class Comparison:
    student: str
    dataset: str
    split: str
    a: str
    b: str
    eval_a: int
    eval_b: int
    paired: Clustered  # the clustered comparison with one outcome per question on each side

    def as_json(self) -> dict[str, Any]:
        p = self.paired
        return {
            "dataset": self.dataset,
            "split": self.split,
            "a": self.a,
            "b": self.b,
            "n": p.n,
            "diff": p.diff,
            "diff_ci": list(p.diff_ci),
            "p_value": p.p_value,
            "student": self.student,
            "acc_a": p.acc_a,
            "acc_b": p.acc_b,
            "a_only": p.a_only,
            "b_only": p.b_only,
            "test": p.test,
            "eval_a": self.eval_a,
            "eval_b": self.eval_b,
        }


def compare(
    conn: Connection, pairs: list[tuple[str, str]] | None = None, rows: list[EvalRow] | None = None
) -> list[Comparison]:
    """Each pair of labels on every Table II line that has both (the newest completed evaluation of each; pass
    ``rows`` from :func:`evaluations`, not :func:`all_evaluations`). One evaluation per side is the one-seed case
    of ``clustered_compare``: its p-value is exact McNemar."""
    rows = evaluations(conn) if rows is None else rows
    _labels, lines = table_two(rows)
    out = []
    for a, b in pairs or list(DEFAULT_PAIRS):
        for line in lines:
            ra, rb = line.cells.get(a), line.cells.get(b)
            if ra is None or rb is None or MAJORITY in (a, b):
                continue
            paired = clustered_compare(one_outcome(outcomes(conn, ra.id)), one_outcome(outcomes(conn, rb.id)))
            out.append(Comparison(line.student, line.dataset, line.split, a, b, ra.id, rb.id, paired))
    return out
