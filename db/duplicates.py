"""Duplicate paths: paths of one question (of one job) whose normalised text is identical.

The normalisation (:func:`normalise`), defined here once for the app and the command line:

1. Unicode NFKC (compatibility forms fold: full-width letters, ligatures, the non-breaking space),
2. case folded (``str.casefold``: a lowercase that also folds ``ß`` to ``ss``), then NFKC again so that
   normalising twice changes nothing,
3. every run of whitespace (any Unicode whitespace, newlines included) collapsed to one space, and the
   surrounding whitespace stripped.

Nothing else is changed: punctuation, digits and zero-width characters count.

In a group of paths of one question with the same normalised text, the first by (branch, sample, id) is the
original and every other one is a duplicate of it. The marks are not stored: they are computed when read, from
the paths of the questions asked for (over the ``(job_id, question_id, id)`` index) or of the whole job (one
pass), so that they follow the texts as paths arrive and need no column.

Like all of db/, this module imports nothing from engine/ or sert_tui/.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from db.models import Path
from db.paths_repo import set_decision

#: Question ids per ``IN (...)`` (below SQLite's limit of bound variables).
CHUNK = 500

Row = tuple[int, int, int, int, str, str | None]  # (id, question_id, branch, sample, text, decision)


def normalise(text: str) -> str:
    """The text two paths are compared by (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


@dataclass
class Duplicates:
    """The duplicate marks of the paths read: ``of`` maps a duplicate's id to its original's id."""

    of: dict[int, int] = field(default_factory=dict)
    undecided: list[int] = field(default_factory=list)  # duplicates without a decision, by id
    decided: int = 0  # duplicates a decision was already made on

    def as_dict(self) -> dict:
        return {"duplicates": len(self.of), "undecided": len(self.undecided), "decided": self.decided}


def mark(rows: Iterable[Row]) -> Duplicates:
    """The duplicates among ``rows`` (whole questions: a question's paths not in ``rows`` are not seen)."""
    result = Duplicates()
    originals: dict[tuple[int, str], int] = {}
    for pid, question_id, _branch, _sample, text, decision in sorted(rows, key=lambda r: (r[1], r[2], r[3], r[0])):
        original = originals.setdefault((question_id, normalise(text or "")), pid)
        if original == pid:
            continue
        result.of[pid] = original
        if decision is None:
            result.undecided.append(pid)
        else:
            result.decided += 1
    result.undecided.sort()
    return result


def _select(job_id: int):
    return select(Path.id, Path.question_id, Path.branch, Path.sample, Path.text, Path.decision).where(
        Path.job_id == job_id
    )


def find(conn: Connection, job_id: int, question_ids: Iterable[int] | None = None) -> Duplicates:
    """The duplicates of the paths of job ``job_id`` (the job that owns the paths: a sample or teacher job):
    of the questions ``question_ids``, or of the whole job when None."""
    if question_ids is None:
        return mark(tuple(r) for r in conn.execute(_select(job_id)))  # type: ignore[misc]
    ids = sorted(set(question_ids))
    rows: list[Row] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        rows.extend(tuple(r) for r in conn.execute(_select(job_id).where(Path.question_id.in_(chunk))))  # type: ignore[attr-defined, misc]
    return mark(rows)


def reject_undecided(session: Session, job_id: int, question_id: int | None = None) -> Duplicates:
    """Reject every duplicate of the job (or of one question) that carries no decision, in the caller's
    transaction, through the function every decision goes through (:func:`db.paths_repo.set_decision`).
    Decisions already made are kept. Returns the marks; ``undecided`` names the paths rejected.

    The write lock is taken before the read (an UPDATE that matches no row begins SQLite's write transaction),
    so a path read as undecided cannot be decided by another process before it is rejected here."""
    session.execute(update(Path).where(Path.id == -1).values(decision=None))  # type: ignore[arg-type]
    found = find(session.connection(), job_id, None if question_id is None else [question_id])
    for pid in found.undecided:
        set_decision(session, pid, "rejected")
    return found
