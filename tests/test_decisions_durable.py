"""No decision is ever lost: a write that finds the workspace locked is retried, one that still fails is kept
in the workspace's journal of pending decisions, a hung-up terminal waits for the write or the journal, and
the next start (the app, ``sert-tui paths``) applies what was kept and says so.

The lock is real: another sqlite3 connection holds ``BEGIN EXCLUSIVE`` on the workspace (in WAL mode readers
go on, writers wait). Nothing here waits on a guess of how long something takes: the tests wait on events
and conditions, with generous limits.
"""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import stat
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from db import decision_journal as journal
from db.models import Path as PathRow
from db.session import session_scope
from sert_tui import hangup
from sert_tui.app import SertApp
from sert_tui.services.decisions import DecisionWriter
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    cell_text,
    decisions,
    make_dataset,
    make_filter_job,
    make_sample_job,
    wait_for,
)
from tests.test_app_paths import SIZE, open_paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace(engine, db_path):
    dataset = make_dataset(engine, n_train=5)
    sample = make_sample_job(engine, dataset, n_questions=3)
    filt = make_filter_job(engine, dataset, sample)
    return {"engine": engine, "db": db_path, "dataset": dataset, "sample": sample, "filter": filt}


class Lock:
    """The workspace's write lock, held by another connection (``BEGIN EXCLUSIVE``) until ``release()``."""

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=0)
        self.conn.execute("BEGIN EXCLUSIVE")
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.conn.execute("ROLLBACK")


@contextmanager
def locked(db_path: Path):
    lock = Lock(db_path)
    try:
        yield lock
    finally:
        lock.release()
        lock.conn.close()


def ids_of(engine, job_id: int) -> list[int]:
    return sorted(decisions(engine, job_id))


def record_notifications(app: SertApp) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    notify = app.notify

    def recording(message, *args, **kwargs):
        notes.append((str(message), str(kwargs.get("severity", "information"))))
        return notify(message, *args, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return notes


# -- retries ------------------------------------------------------------------------------------------
def test_a_busy_write_is_retried_and_lands_once_the_lock_goes(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    pauses: list[float] = []
    with locked(db) as lock:

        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 2:
                lock.release()  # during the second pause: the third attempt finds the workspace free

        skipped = journal.write_decisions(
            engine,
            [(ids[0], "accepted"), (ids[1], "rejected")],
            attempts=5,
            backoff_s=0.01,
            busy_timeout_s=0.05,
            sleep=sleep,
        )
    assert skipped == 0
    assert pauses == [0.01, 0.02]  # two busy attempts, back-off doubling, then the write
    got = decisions(engine, workspace["sample"])
    assert got[ids[0]] == "accepted" and got[ids[1]] == "rejected"


def test_a_write_gives_up_after_its_attempts_with_the_busy_error(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    pauses: list[float] = []
    with locked(db):
        with pytest.raises(Exception) as raised:
            journal.write_decisions(
                engine, [(ids[0], "accepted")], attempts=3, backoff_s=0.01, busy_timeout_s=0.05, sleep=pauses.append
            )
    assert journal.is_busy(raised.value) and "locked" in str(raised.value)
    assert pauses == [0.01, 0.02]
    assert decisions(engine, workspace["sample"])[ids[0]] is None
    # The workspace's own busy timeout is back on the pooled connection.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_an_error_that_is_not_a_busy_workspace_is_not_retried(workspace) -> None:
    pauses: list[float] = []
    with pytest.raises(ValueError):
        journal.write_decisions(workspace["engine"], [(1, "maybe")], attempts=5, sleep=pauses.append)
    assert pauses == []
    assert not journal.is_busy(ValueError("database is locked"))  # only sqlite's own error counts


# -- the journal --------------------------------------------------------------------------------------------
def test_the_journal_is_owner_only_json_applied_in_order_once(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    assert path == journal.journal_of(engine) and path.name == "workspace.db.decisions-pending.jsonl"
    when = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    journal.append(path, [([(ids[0], "accepted"), (ids[1], "accepted")], when), ([(ids[0], "rejected")], None)])
    journal.append(path, [([(ids[1], None), (ids[2], "ignored"), (10**9, "accepted")], None)])
    with path.open("ab") as fh:
        fh.write(b'{"v": 1, "decisions": [{"path": 5')  # a line torn by a crash mid-write
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[0]) == {
        "v": 1,
        "at": "2026-12-01T10:00:00+00:00",
        "decisions": [{"path": ids[0], "decision": "accepted"}, {"path": ids[1], "decision": "accepted"}],
    }
    entries, bad = journal.read(path)
    assert len(entries) == 3 and bad == 1
    assert journal.last_decisions(entries).keys() == {ids[0], ids[1], ids[2], 10**9}

    result = journal.replay(engine)
    assert result is not None and result.done
    assert (result.written, result.missing, result.bad) == (3, 1, 1)
    assert result.message() == (
        f"re-applied 3 decisions that could not be written earlier (kept in {path}); "
        "1 decision on paths no longer in the workspace dropped; 1 unreadable line skipped"
    )
    assert not path.exists()
    got = decisions(engine, workspace["sample"])
    assert (got[ids[0]], got[ids[1]], got[ids[2]]) == ("rejected", None, "ignored")  # the last one wins
    assert journal.replay(engine) is None  # nothing left: applying again changes nothing


def test_a_journal_stays_whole_while_the_workspace_is_locked(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    journal.append(path, [([(ids[0], "accepted")], None), ([(ids[1], "rejected")], None)])
    before = path.read_bytes()
    with locked(db):
        result = journal.replay(engine, attempts=2, backoff_s=0.01, busy_timeout_s=0.05)
    assert result is not None and not result.done and result.kept == 2
    assert result.message() == (
        f"2 decisions kept in {path} could not be written yet (database is locked); "
        "they stay there and are written once the workspace is free"
    )
    assert path.read_bytes() == before
    assert decisions(engine, workspace["sample"])[ids[0]] is None
    assert journal.replay(engine).written == 2  # type: ignore[union-attr]
    assert not path.exists()


# -- the writer ------------------------------------------------------------------------------------------
def test_a_drain_keeps_what_is_still_in_flight_and_committed_waits(workspace) -> None:
    """The hang-up drain's side: the write of the first batch waits on the lock (a long busy timeout); the
    drain keeps every batch in the journal, ``committed`` does not claim them, and the next writer applies
    them and says so."""
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    reports: list[tuple[str, str]] = []
    with locked(db) as lock:
        writer = DecisionWriter(engine, report=lambda m, s: reports.append((m, s)))
        writer.busy_timeout_s, writer.attempts = 60.0, 1
        for batch in ([(ids[0], "accepted")], [(ids[1], "rejected"), (ids[2], "accepted")], [(ids[0], "ignored")]):
            writer.submit(batch)
        assert writer.drain(0.3) == 3
        assert writer.committed == 0  # nothing was written: the screen must go on showing these decisions
        entries, bad = journal.read(path)
        assert [e.changes for e in entries] == [
            [(ids[0], "accepted")],
            [(ids[1], "rejected"), (ids[2], "accepted")],
            [(ids[0], "ignored")],
        ]
        closing = threading.Thread(target=writer.close, kwargs={"timeout": 0})
        closing.start()
        assert writer._closing.wait(30)
        lock.release()  # the write in flight may land now; the writer stops after it
        closing.join(60)
        assert not closing.is_alive()
    assert path.exists()
    assert reports == []
    reports2: list[tuple[str, str]] = []
    again = DecisionWriter(engine, report=lambda m, s: reports2.append((m, s)))
    try:
        again.flush()
        with again._state:
            again._state.wait_for(lambda: not path.exists(), 30)
    finally:
        again.close()
    got = decisions(engine, workspace["sample"])
    assert (got[ids[0]], got[ids[1]], got[ids[2]]) == ("ignored", "rejected", "accepted")
    assert reports2 == [(f"re-applied 3 decisions that could not be written earlier (kept in {path})", "information")]


# -- the real app ------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_decisions_made_while_the_workspace_is_locked_survive_a_hang_up_and_the_next_start(
    workspace, monkeypatch
) -> None:
    monkeypatch.setattr(DecisionWriter, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(DecisionWriter, "ATTEMPTS", 2)
    monkeypatch.setattr(DecisionWriter, "BACKOFF_S", 0.05)
    monkeypatch.setattr(DecisionWriter, "RETRY_EVERY_S", 0.2)
    engine, db, job = workspace["engine"], workspace["db"], workspace["sample"]
    path = journal.journal_path(db)
    sent: dict[int, str | None] = {}
    app = SertApp(db, engine=engine)
    notes = record_notifications(app)
    with ExitStack() as stack:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_paths(app, pilot, job)
            writer = app.decision_writer
            submit = writer.submit

            def recording_submit(changes):
                for pid, decision in changes:
                    sent[pid] = decision
                return submit(changes)

            writer.submit = recording_submit  # type: ignore[method-assign]
            await pilot.press("a")  # the workspace is free: written at once
            writer.flush()
            first = dict(sent)
            assert decisions(engine, job)[next(iter(first))] == "accepted"

            stack.enter_context(locked(db))  # held until the app has ended
            before = decisions(engine, job)
            sent.clear()
            # A burst while another connection holds the lock longer than every retry: single keys, a
            # re-decision, an undo and a bulk accept of the page.
            for key in ("a", "x", "space", "a", "backspace", "x", "a", "P", "x"):
                await pilot.press(key)
            made = dict(sent)
            assert len(made) > 10
            # Readers go on while the lock is held; the screen shows the decisions made.
            on_screen = {pid: d for pid, d in made.items() if pid in screen.by_id}
            assert on_screen and all(screen.by_id[pid].decision == d for pid, d in on_screen.items())

            # The terminal hangs up (a real pty closes; the watcher's exit is recorded instead of taken).
            master, slave = pty.openpty()
            exited = threading.Event()
            codes: list[int] = []
            try:
                hangup.watch(fds=[slave], interval=0.05, exit=lambda code: (codes.append(code), exited.set()))
                os.close(master)
                await wait_for(pilot, exited.is_set, timeout=60, what="the hang-up drain")
            finally:
                os.close(slave)
            assert codes == [hangup.HANGUP_EXIT_CODE]
            # Nothing reached the workspace; everything made is in the journal, owner-only, the last one wins.
            assert decisions(engine, job) == before
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert {pid: d for pid, (d, _at) in journal.last_decisions(journal.read(path)[0]).items()} == made
            assert writer.committed < writer.submitted  # the kept batches are not claimed as written

            def kept() -> list[str]:
                return [m for m, s in notes if s == "warning" and "could not be written (database is locked)" in m]

            await wait_for(pilot, lambda: bool(kept()), timeout=30, what="the warning that decisions are kept")
            tail = f"kept in {path}, they are written once the workspace is free or at the next start"
            assert kept()[0].endswith(tail)
            # Still on screen as made: the page re-reads meanwhile do not undo them.
            await pilot.pause(0.3)
            for pid, d in on_screen.items():
                shown = cell_text(screen.table, str(pid), "decision")
                assert shown == {"accepted": "✓ accept", "rejected": "✗ reject", "ignored": "– ignore", None: ""}[d]
        # The app ended (the person is gone) before the lock went: the journal waits for the next start.
        assert path.exists() and decisions(engine, job) == before

    app2 = SertApp(db, engine=engine)
    notes2 = record_notifications(app2)
    async with app2.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: not path.exists(), timeout=60, what="the journal to be applied")
        expected = f"re-applied {len(made)} decisions that could not be written earlier (kept in {path})"
        await wait_for(pilot, lambda: (expected, "information") in notes2, timeout=30, what="the notification")
        assert any(n.message == expected for n in app2._notifications)  # shown (a toast), not only logged
    got = decisions(engine, job)
    assert all(got[pid] == d for pid, d in {**first, **made}.items())


@pytest.mark.anyio
async def test_kept_decisions_are_written_once_the_lock_goes_while_the_app_runs(workspace, monkeypatch) -> None:
    monkeypatch.setattr(DecisionWriter, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(DecisionWriter, "ATTEMPTS", 2)
    monkeypatch.setattr(DecisionWriter, "BACKOFF_S", 0.05)
    monkeypatch.setattr(DecisionWriter, "RETRY_EVERY_S", 0.2)
    engine, db, job = workspace["engine"], workspace["db"], workspace["sample"]
    ids = ids_of(engine, job)
    path = journal.journal_path(db)
    app = SertApp(db, engine=engine)
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, job)
        writer = app.decision_writer
        with locked(db):
            for key in ("a", "x", "a"):
                await pilot.press(key)
            writer.flush()  # all three dealt with: kept, since the lock outlasts every retry
            assert journal.pending(path) == 3 and writer.committed == 0
            await wait_for(
                pilot, lambda: any(s == "warning" and "kept in" in m for m, s in notes), timeout=30, what="the warning"
            )
        # The lock is gone: the writer's next try (it retries while idle) writes them and says so.
        expected = f"re-applied 3 decisions that could not be written earlier (kept in {path})"
        await wait_for(pilot, lambda: (expected, "information") in notes, timeout=30, what="the re-apply")
        assert not path.exists()
        got = decisions(engine, job)
        assert (got[ids[0]], got[ids[1]], got[ids[2]]) == ("accepted", "rejected", "accepted")
        assert writer.committed == writer.submitted
        await wait_for(pilot, lambda: screen.counts.accepted == 2 and screen.counts.rejected == 1, what="counts")
        assert cell_text(screen.table, str(ids[1]), "decision") == "✗ reject"


# -- the command line --------------------------------------------------------------------------------------
def cli(db: Path, *args: str) -> subprocess.CompletedProcess:
    exe = ROOT / ".venv" / "bin" / "sert-tui"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sert_tui"]
    return subprocess.run(
        [*cmd, "--db", str(db), *args], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )


def test_paths_list_applies_the_journal_first_and_says_so_on_stderr(workspace) -> None:
    engine, db, job = workspace["engine"], workspace["db"], workspace["sample"]
    ids = ids_of(engine, job)
    path = journal.journal_path(db)
    journal.append(path, [([(ids[0], "accepted"), (ids[3], "rejected")], None), ([(ids[3], "ignored")], None)])
    engine.dispose()  # the command is another process
    result = cli(db, "paths", "list", "--job", str(job), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r["decision"] for r in json.loads(result.stdout)}  # stdout: the one JSON document
    assert rows[ids[0]] == "accepted" and rows[ids[3]] == "ignored"
    assert f"note: re-applied 2 decisions that could not be written earlier (kept in {path})" in result.stderr
    assert not path.exists()
    with session_scope(engine) as s:
        decided = s.get(PathRow, ids[0])
        assert decided is not None and decided.decided_at is not None
