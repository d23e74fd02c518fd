"""The app's decision writer: a person's accept / reject / ignore reaches the workspace, or is kept, never lost.

Decisions are written in the order they were made, one transaction per key press or bulk action, on one
thread. A write that finds the workspace busy is retried with back-off; one that still fails goes to the
workspace's journal (:mod:`db.decision_journal`), and so do the decisions after it until the journal could be
applied, so that the order holds. The writer applies a journal it finds when it starts (one an earlier
session left), after each new decision while one is pending, and every few seconds while idle; the person
is told when decisions are kept and when they are re-applied. A writer registers with :mod:`sert_tui.hangup`:
before the app ends on a hung-up terminal, every decision made is written or kept in the journal.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from db import decision_journal as journal
from db.errors import first_line
from sert_tui import hangup

Change = journal.Change
#: report(message, severity): how the writer tells the person (the app: a notification).
Report = Callable[[str, str], None]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class DecisionWriter:
    """Writes decisions in order on one thread; keeps in the journal what cannot be written.

    ``submitted`` counts the batches handed in. ``committed`` is the sequence number up to which every batch
    is settled in the workspace (written, or failed and reported); readers use it to tell whether a page they
    read already contains a decision the screen shows, so a batch kept in the journal holds it back -- the
    screen goes on showing that decision -- until the journal is applied. ``kept`` counts the batches this
    writer put in the journal.
    """

    #: Attempts of one write while the workspace is busy, the wait for its lock in each, the first pause
    #: between two; while a journal is pending it is applied again after this many idle seconds.
    ATTEMPTS = journal.ATTEMPTS
    BUSY_TIMEOUT_S = 10.0
    BACKOFF_S = journal.BACKOFF_S
    RETRY_EVERY_S = 5.0
    CLOSE_TIMEOUT_S = 10.0

    def __init__(self, engine, report: Report | None = None, *, journal_path: Path | None = None):
        self.engine = engine
        self.report: Report = report or (lambda _message, _severity: None)
        self.journal = journal_path if journal_path is not None else journal.journal_of(engine)
        self.attempts, self.busy_timeout_s = self.ATTEMPTS, self.BUSY_TIMEOUT_S
        self.backoff_s, self.retry_every_s = self.BACKOFF_S, self.RETRY_EVERY_S
        self.submitted = 0
        self.committed = 0
        self.kept = 0
        self.kept_on_close = 0  # batches the last close() had to keep in the journal
        # Batches neither written nor kept yet, by sequence number (what a drain must still make durable).
        self._pending: dict[int, tuple[list[Change], datetime]] = {}
        self._kept: set[int] = set()  # batches kept in the journal and not applied yet
        self._handled = 0  # the last batch the thread dealt with
        self._dirty = False  # the journal may hold decisions: new ones go after them
        self._state = threading.Condition()
        self._journal_lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
        self._thread.start()
        hangup.PENDING_WRITES.add(self)

    # -- the caller's side ------------------------------------------------------------------------------
    def submit(self, changes: list[Change]) -> int:
        with self._state:
            self.submitted += 1
            seq = self.submitted
            self._pending[seq] = (list(changes), datetime.now(UTC))
        self._queue.put(seq)
        return seq

    def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        """Wait until batch ``seq`` is dealt with: written, kept in the journal, or failed (and reported)."""
        with self._state:
            self._state.wait_for(lambda: self._handled >= seq or self._closing.is_set(), timeout)

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every submitted decision to be written or kept; what is still
        in flight then is kept in the journal. Returns the number of batches this call kept; raises the
        ``OSError`` of a journal that could not take them (they stay pending: see :meth:`rescue`)."""
        with self._state:
            self._state.wait_for(lambda: not self._pending, timeout)
        return self._keep()

    def unsaved(self) -> list[tuple[list[Change], datetime]]:
        """The batches neither written nor kept, in the order they were made."""
        with self._state:
            return [batch for _seq, batch in sorted(self._pending.items())]

    def rescue(self, error: BaseException) -> str:
        """After a failed :meth:`drain` (the hang-up's): one more try at keeping the unsaved batches in the
        journal; the sentence says where they went or, when they could not be kept, holds them as the
        journal's lines would, so that a log of standard error still has them."""
        batches = self.unsaved()
        n = sum(len(changes) for changes, _at in batches)
        if not batches:
            return f"the decision writer failed while ending ({first_line(error)}); no decision was left unsaved"
        try:
            if self.journal is None:
                raise OSError("the workspace has no journal (an in-memory workspace)")
            kept = self._keep()
        except Exception as again:
            lines = "".join(journal.line(changes, at).decode() for changes, at in batches)
            return (
                f"{_plural(n, 'decision')} could not be saved ({first_line(error)}; then {first_line(again)}); "
                f"they were, as lines of {self.journal}:\n{lines.rstrip()}"
            )
        return (
            f"decisions could not be kept at first ({first_line(error)}); "
            f"{_plural(n, 'decision')} ({_plural(kept, 'batch')}) kept in {self.journal} on a second try"
        )

    def flush(self) -> None:
        """Block until every submitted decision is written or kept."""
        self._queue.join()

    def close(self, timeout: float | None = None) -> None:
        """Every decision made is written or kept (waiting up to ``timeout`` seconds for the writes), then
        the thread ends."""
        try:
            self.kept_on_close = self.drain(self.CLOSE_TIMEOUT_S if timeout is None else timeout)
        except OSError as exc:
            self.kept_on_close = 0
            self.report(f"decisions could not be kept in {self.journal}: {first_line(exc)}", "error")
        self._closing.set()
        with self._state:
            self._state.notify_all()
        self._queue.put(None)
        self._thread.join(timeout=self.busy_timeout_s + 5)

    # -- the thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.journal is not None and self.journal.exists():
            self._dirty = True
            self._replay(announce_failure=True)
        while True:
            try:
                seq = self._queue.get(timeout=self.retry_every_s if self._dirty else None)
            except queue.Empty:
                if not self._closing.is_set():
                    self._replay()
                continue
            try:
                if seq is None or self._closing.is_set():
                    return  # closing: what is still queued was kept by close()'s drain
                self._handle(seq)
            except Exception as exc:  # nothing may end the thread; the screen re-reads the truth
                self.report(f"a decision could not be written: {first_line(exc)}", "error")
            finally:
                if seq is not None:
                    with self._state:
                        self._handled = max(self._handled, seq)
                        self._advance()
                self._queue.task_done()

    def _advance(self) -> None:
        """(with ``_state`` held) Move ``committed`` up to the last batch handled before any kept one."""
        limit = min(self._kept) - 1 if self._kept else self._handled
        self.committed = max(self.committed, min(self._handled, limit))
        self._state.notify_all()

    def _handle(self, seq: int) -> None:
        with self._state:
            batch = self._pending.get(seq)
        if batch is None:
            # Kept by a drain meanwhile: it and what follows wait in the journal.
            self._replay()
            return
        changes, at = batch
        if self.journal is not None and (self._dirty or self.journal.exists()):
            # Earlier decisions wait in the journal: this one goes after them, so that the last one wins.
            if self._keep_reporting(seq, None):
                self._replay()
            return
        try:
            missing = journal.write_decisions(
                self.engine,
                changes,
                at=at,
                attempts=self.attempts,
                backoff_s=self.backoff_s,
                busy_timeout_s=self.busy_timeout_s,
                sleep=self._closing.wait,
            )
        except Exception as exc:
            if self.journal is None:
                with self._state:
                    self._pending.pop(seq, None)
                raise
            self._keep_reporting(seq, exc)
            return
        with self._state:
            self._pending.pop(seq, None)
            self._state.notify_all()
        if missing:
            self.report(f"{_plural(missing, 'decision')} on paths no longer in the workspace dropped", "warning")

    def _keep_reporting(self, seq: int, error: Exception | None) -> bool:
        """Keep the batches up to ``seq`` in the journal and tell the person why; False when that failed."""
        try:
            kept = self._keep(seq)
        except OSError as exc:
            self.report(f"a decision could not be written nor kept in {self.journal}: {first_line(exc)}", "error")
            return False
        if error is not None and kept:
            self.report(
                f"{_plural(journal.pending(self.journal), 'decision')} could not be written ({first_line(error)}); "
                f"kept in {self.journal}, they are written once the workspace is free or at the next start",
                "warning",
            )
        return True

    def _keep(self, through: int | None = None) -> int:
        """Append the batches not yet written nor kept (up to ``through``) to the journal, in order."""
        if self.journal is None:
            return 0
        with self._journal_lock:
            with self._state:
                batches = sorted((s, b) for s, b in self._pending.items() if through is None or s <= through)
            if not batches:
                return 0
            journal.append(self.journal, [b for _s, b in batches])
            with self._state:
                for s, _b in batches:
                    self._pending.pop(s, None)
                    self._kept.add(s)
                self.kept += len(batches)
                self._dirty = True
                self._state.notify_all()
        return len(batches)

    def _replay(self, announce_failure: bool = False) -> None:
        """Apply the journal (once: it is tried again later while it stays)."""
        if self.journal is None:
            self._dirty = False
            return
        with self._journal_lock:  # no append of ours in between: what the file holds is what ``_kept`` names
            with self._state:
                kept = set(self._kept)
            try:
                result = journal.replay(
                    self.engine, self.journal, attempts=1, busy_timeout_s=self.busy_timeout_s, sleep=self._closing.wait
                )
            except OSError as exc:
                self.report(f"the decisions kept in {self.journal} could not be read: {first_line(exc)}", "error")
                return
            if result is not None and not result.done:
                if announce_failure:
                    self.report(result.message() or "", "warning")
                return
            with self._state:
                self._kept -= kept
                self._dirty = self.journal.exists()  # another process may have started a new one meanwhile
                self._advance()
        message = result.message() if result is not None else None
        if message:
            self.report(message, "information")
