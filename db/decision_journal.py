"""A person's decisions that could not be written yet: a journal beside the workspace, re-applied later.

A decision is written in one short transaction. When the workspace stays busy (another process holds its
write lock) longer than the retries, or the program must end before the write lands (a hung-up terminal),
the decisions are kept in ``<workspace>.decisions-pending.jsonl`` instead: owner-only (0600), appended and
fsynced, JSON only, one line per batch (one key press or bulk action)::

    {"v": 1, "at": "2026-12-01T10:00:00.123456+00:00", "decisions": [{"path": 12, "decision": "accepted"}]}

(``"decision": null`` clears one). :func:`replay` -- the app's decision writer at start and while it runs,
``sert-tui paths``, and every reader of decisions through :func:`apply_pending` (a training stage, an export)
-- applies every batch in order in one transaction, so the last decision for a path wins, then removes the
file; applying a batch twice changes nothing. A kept decision never overwrites one its path got later (the
path's ``decided_at`` is newer than the batch's ``at``): it is skipped and counted as stale. A decision
written from the journal carries the batch's ``at``: when the person decided, not when it was replayed.
Appenders and re-appliers take an exclusive ``flock`` on the file and re-open it when it was removed
meanwhile, so that no line lands in a file another process is removing.

Like all of db/, this module imports nothing from engine/ or sert_tui/.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.errors import UserError
from db.models import Path as PathRow
from db.paths_repo import DECISIONS, set_decision
from db.session import BUSY_TIMEOUT_MS

SUFFIX = ".decisions-pending.jsonl"
VERSION = 1
FILE_MODE = 0o600

#: Default retries of a write that finds the workspace busy, and the first pause between two (doubling).
ATTEMPTS = 3
BACKOFF_S = 0.25

Change = tuple[int, str | None]  # (path id, decision or None)
T = TypeVar("T")


# -- where ----------------------------------------------------------------------------------------------
def journal_path(workspace: Path | str) -> Path:
    """The journal of the workspace file ``workspace``."""
    return Path(os.path.realpath(os.fspath(workspace)) + SUFFIX)


def journal_of(engine: Engine) -> Path | None:
    """The journal of the workspace ``engine`` is open on (None for an in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return journal_path(database)


# -- busy, retries --------------------------------------------------------------------------------------
def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` (sqlite3's or SQLAlchemy's wrapper of it) says another connection holds a lock."""
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    name = getattr(orig, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    text = str(orig).lower()
    return "database is locked" in text or "is busy" in text or "table is locked" in text


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """``fn()``, called again after a pause (doubling) while it fails because the workspace is busy, at most
    ``attempts`` times; the last error is raised. A ``sleep`` that returns something true stops the retries
    (an event's ``wait``: the program is ending)."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not is_busy(exc):
                raise
            if sleep(backoff_s * 2 ** (attempt - 1)):
                raise
    raise AssertionError("unreachable")


def _apply(
    engine: Engine,
    changes: Sequence[tuple[int, str | None, datetime | None]],
    busy_timeout_s,
    *,
    newer_wins: bool = False,
) -> tuple[int, int]:
    """Write ``changes`` in one transaction; returns how many named a path that is no longer there (skipped:
    a decision on a deleted path means nothing) and, with ``newer_wins``, how many were older than the
    decision the path holds (skipped: a replay never overwrites a decision made later)."""
    missing = stale = 0
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if busy_timeout_s is not None:  # this connection only, and only for this write
            raw.execute(f"PRAGMA busy_timeout={max(0, int(busy_timeout_s * 1000))}")
        try:
            with Session(bind=conn, expire_on_commit=False) as session:
                for path_id, decision, at in changes:
                    if newer_wins and at is not None and is_newer(session, path_id, at):
                        stale += 1
                        continue
                    try:
                        set_decision(session, path_id, decision, at=at)
                    except KeyError:
                        missing += 1
                session.commit()
        finally:
            if busy_timeout_s is not None:
                raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return missing, stale


def is_newer(session: Session, path_id: int, at: datetime) -> bool:
    """Whether the path's decision was made (or cleared) after ``at``: the rule that keeps a replayed,
    older decision from overwriting it."""
    row = session.get(PathRow, path_id)
    if row is None or row.decided_at is None:
        return False
    when = at if at.utcoffset() is not None else at.replace(tzinfo=UTC)
    return row.decided_at > when


def write_decisions(
    engine: Engine,
    changes: Iterable[Change],
    *,
    at: datetime | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    busy_timeout_s: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Write one batch of decisions in one transaction, retried while the workspace is busy (each attempt
    waits up to ``busy_timeout_s`` for the lock; the workspace's own busy timeout when None). Returns the
    number of decisions skipped because their path is gone; raises the last error once the retries are
    spent."""
    rows = [(int(pid), decision, at) for pid, decision in changes]
    missing, _stale = with_retries(
        lambda: _apply(engine, rows, busy_timeout_s), attempts=attempts, backoff_s=backoff_s, sleep=sleep
    )
    return missing


# -- the file -------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_locked(path: Path, create: bool) -> int | None:
    """The journal opened for appending and locked exclusively (None: there is none and ``create`` is false).
    A file removed or replaced while we waited for its lock is let go and the current one opened."""
    flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


def line(changes: Sequence[Change], at: datetime) -> bytes:
    """The journal's line of one batch."""
    record = {
        "v": VERSION,
        "at": at.isoformat(),
        "decisions": [{"path": int(pid), "decision": decision} for pid, decision in changes],
    }
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def append(path: Path, batches: Sequence[tuple[Sequence[Change], datetime | None]]) -> None:
    """Add ``batches`` ((changes, when decided) each) to the journal, in order, and make them durable (fsync
    of the file, and of its folder when the file is new) before returning."""
    now = datetime.now(UTC)
    data = b"".join(line(changes, at or now) for changes, at in batches if changes)
    if not data:
        return
    path = Path(path)
    fd = _open_locked(path, create=True)
    assert fd is not None
    try:
        fresh = os.fstat(fd).st_size == 0
        if fresh:
            os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if fresh:
        _fsync_dir(path.parent)


@dataclass
class Entry:
    at: datetime | None
    changes: list[Change]


def parse(data: bytes) -> tuple[list[Entry], int]:
    """The batches of a journal's bytes, and the number of lines that are not one (a torn last line of a
    write the machine did not finish, a damaged file): those are skipped."""
    entries: list[Entry] = []
    bad = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            changes = [(int(d["path"]), d["decision"]) for d in record["decisions"]]
            if any(decision is not None and decision not in DECISIONS for _, decision in changes):
                raise ValueError("unknown decision")
            at = datetime.fromisoformat(record["at"]) if record.get("at") else None
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        entries.append(Entry(at, changes))
    return entries, bad


def read(path: Path) -> tuple[list[Entry], int]:
    """The batches kept in the journal at ``path`` (none when there is no file)."""
    try:
        return parse(Path(path).read_bytes())
    except FileNotFoundError:
        return [], 0


def last_decisions(entries: Iterable[Entry]) -> dict[int, tuple[str | None, datetime | None]]:
    """Per path its last decision, in the order of those last decisions."""
    last: dict[int, tuple[str | None, datetime | None]] = {}
    for entry in entries:
        for path_id, decision in entry.changes:
            last.pop(path_id, None)
            last[path_id] = (decision, entry.at)
    return last


# -- applying it --------------------------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class Replay:
    """What :func:`replay` did with a journal."""

    path: Path
    written: int = 0  # decisions (one per path, the last) now in the workspace
    missing: int = 0  # decisions on paths no longer in the workspace (dropped)
    stale: int = 0  # decisions older than the one the path holds now (skipped: the later decision stays)
    bad: int = 0  # unreadable lines (dropped)
    kept: int = 0  # decisions still in the journal: the workspace was busy again
    error: str | None = None  # why they are still kept

    @property
    def done(self) -> bool:
        return self.error is None

    def message(self) -> str | None:
        """The sentence that tells the person what happened (None: there was nothing to tell)."""
        if not self.done:
            return (
                f"{_plural(self.kept, 'decision')} kept in {self.path} could not be written yet ({self.error}); "
                "they stay there and are written once the workspace is free"
            )
        if not (self.written or self.missing or self.stale or self.bad):
            return None
        text = f"re-applied {_plural(self.written, 'decision')} that could not be written earlier (kept in {self.path})"
        if self.missing:
            text += f"; {_plural(self.missing, 'decision')} on paths no longer in the workspace dropped"
        if self.stale:
            text += (
                f"; {_plural(self.stale, 'older decision')} skipped as stale "
                "(the workspace holds a decision made later on those paths)"
            )
        if self.bad:
            text += f"; {_plural(self.bad, 'unreadable line')} skipped"
        return text


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def replay(
    engine: Engine,
    path: Path | None = None,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    busy_timeout_s: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> Replay | None:
    """Apply the workspace's journal (``path``: its default place) and remove it; None when there is none.

    Every kept batch is applied in order, in one transaction (the last decision for a path wins), retried
    while the workspace is busy. A kept decision older than the one its path holds (``decided_at``, set or
    cleared since by another writer: ``sert-tui paths``, a later batch written directly) is skipped and
    counted as ``stale``: the workspace keeps the later decision, and ``decided_at`` of a written one is the
    journal's ``at``, when the person decided. A journal that still cannot be written stays as it is (``done`` false).
    The journal's lock is held throughout, so that appends meanwhile wait and then go to a new file.
    """
    path = journal_of(engine) if path is None else Path(path)
    if path is None:
        return None
    fd = _open_locked(path, create=False)
    if fd is None:
        return None
    try:
        chunks = []
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        entries, bad = parse(b"".join(chunks))
        last = last_decisions(entries)
        rows = [(pid, decision, at) for pid, (decision, at) in last.items()]
        try:
            missing, stale = (
                with_retries(
                    lambda: _apply(engine, rows, busy_timeout_s, newer_wins=True),
                    attempts=attempts,
                    backoff_s=backoff_s,
                    sleep=sleep,
                )
                if rows
                else (0, 0)
            )
        except Exception as exc:
            return Replay(path, bad=bad, kept=len(rows), error=_first_line(exc))
        os.unlink(path)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return Replay(path, written=len(rows) - missing - stale, missing=missing, stale=stale, bad=bad)


def pending(path: Path) -> int:
    """How many decisions (one per path) the journal at ``path`` keeps."""
    entries, _bad = read(path)
    return len(last_decisions(entries))


def apply_pending(engine: Engine, echo: Callable[[str], object] | None = None, **retries) -> Replay | None:
    """Apply the workspace's journal before decisions are read (a training stage, an export): what a person
    decided must not be missing from what they read. Tells ``echo`` what was re-applied; raises
    :class:`~db.errors.UserError` naming the journal when it cannot be applied (the workspace stays busy,
    the file cannot be read)."""
    path = journal_of(engine)
    if path is None:
        return None
    try:
        result = replay(engine, path, **retries)
    except OSError as exc:
        raise UserError(f"the decisions kept in {path} could not be read: {exc.strerror or exc}") from exc
    if result is not None and not result.done:
        raise UserError(
            f"{_plural(result.kept, 'decision')} kept in {path} could not be applied ({result.error}); "
            "run again once the workspace is free: decisions are read only with them in place"
        )
    message = result.message() if result is not None else None
    if message and echo is not None:
        echo(f"note: {message}")
    return result
