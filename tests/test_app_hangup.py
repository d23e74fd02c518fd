"""The app ends when its terminal goes away (a closed window, a dropped SSH session, a killed tmux pane)
instead of spinning on a dead terminal, and writes the decisions already made first."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from sert_tui import hangup

ROOT = Path(__file__).resolve().parent.parent


def test_hung_up_follows_a_real_pty() -> None:
    master, slave = pty.openpty()
    try:
        assert not hangup.hung_up([slave])
        os.close(master)
        assert hangup.hung_up([slave])
        assert not hangup.hung_up([])  # no terminal to begin with (tests, pipes): nothing to watch
    finally:
        os.close(slave)


def test_watch_drains_the_pending_writes_then_exits() -> None:
    class Writer:
        drained: list[float] = []

        def drain(self, timeout: float) -> None:
            self.drained.append(timeout)

    writer = Writer()
    hangup.PENDING_WRITES.add(writer)
    master, slave = pty.openpty()
    exited = threading.Event()
    codes: list[int] = []
    try:
        thread = hangup.watch(fds=[slave], interval=0.05, exit=lambda code: (codes.append(code), exited.set()))
        assert thread is not None
        time.sleep(0.2)
        assert not exited.is_set()  # the terminal is there: nothing happens
        os.close(master)
        assert exited.wait(5)
        assert codes == [hangup.HANGUP_EXIT_CODE] and writer.drained == [10.0]
    finally:
        hangup.PENDING_WRITES.discard(writer)
        os.close(slave)
    assert hangup.watch(fds=[]) is None


def test_the_app_exits_when_its_terminal_is_closed(tmp_path: Path) -> None:
    """The app's terminal is a pty that is not its controlling terminal, so no SIGHUP comes (as under
    ``make run``): closing it must still end the app, with 129, within a few seconds."""
    master, slave = pty.openpty()
    exe = ROOT / ".venv" / "bin" / "sert-tui"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sert_tui"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [*cmd, "--db", str(tmp_path / "w.db")], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"workspace" not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                seen += os.read(master, 65536)
        assert b"workspace" in seen, seen[-2000:]  # the app drew its home screen
        os.close(master)
        master = -1
        assert proc.wait(timeout=15) == hangup.HANGUP_EXIT_CODE
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _text(output: bytes) -> bytes:
    """Terminal output without its control sequences (styles, cursor moves), to look for words in."""
    return re.sub(rb"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)", b"", output)


def _read_until(master: int, proc: subprocess.Popen, seen: bytes, wanted: bytes, timeout: float = 120) -> bytes:
    """Read the app's terminal output until the pattern ``wanted`` shows (the app blocks when nobody reads)."""
    deadline = time.monotonic() + timeout
    while not re.search(wanted, _text(seen)) and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            seen += os.read(master, 65536)
    assert re.search(wanted, _text(seen)), (wanted, _text(seen)[-3000:])
    return seen


def start_in_pty(db: Path, size: tuple[int, int] = (160, 50)) -> tuple[subprocess.Popen, int, list[str]]:
    """The app on workspace ``db`` in a real pseudo-terminal of ``size`` columns x lines: its process, the
    terminal's master end (the test's keyboard and screen) and the command that starts ``sert-tui``."""
    master, slave = pty.openpty()
    exe = ROOT / ".venv" / "bin" / "sert-tui"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sert_tui"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(size[0]), "LINES": str(size[1])}
    proc = subprocess.Popen([*cmd, "--db", str(db)], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    return proc, master, cmd


def end(proc: subprocess.Popen, master: int, lock) -> None:
    """After a pty test: release the lock that kept the workspace busy, close the terminal, stop the app."""
    if lock is not None:
        lock.execute("ROLLBACK")
        lock.close()
    if master >= 0:
        os.close(master)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def decisions_at_next_start(cmd: list[str], db: Path, sample: int) -> tuple[dict[int, str | None], str]:
    """The next start after a hang-up (``paths list``, which applies the journal first): each path's decision,
    and what it said on stderr."""
    listed = subprocess.run(
        [*cmd, "--db", str(db), "paths", "list", "--job", str(sample), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    return {r["id"]: r["decision"] for r in json.loads(listed.stdout)}, listed.stderr


def test_decisions_made_while_the_workspace_is_locked_are_kept_when_the_terminal_hangs_up(tmp_path: Path) -> None:
    """The real app in a pty: another connection holds the workspace's write lock while a person decides;
    the terminal goes away. The app must end (129) only once the decisions are kept in the journal, and the
    next ``sert-tui paths list --json`` applies them, says so on stderr and lists them in its one document."""
    import sqlite3

    from db import decision_journal
    from db.session import open_workspace
    from tests.test_app_helpers import decisions, make_dataset, make_filter_job, make_sample_job

    db = tmp_path / "w.db"
    engine = open_workspace(db)
    dataset = make_dataset(engine, n_train=3)
    sample = make_sample_job(engine, dataset, n_questions=2)
    make_filter_job(engine, dataset, sample)
    ids = sorted(decisions(engine, sample))
    engine.dispose()
    journal = decision_journal.journal_path(db)

    proc, master, cmd = start_in_pty(db)
    lock = None
    try:
        seen = _read_until(master, proc, b"", rb"2\s+filter\s+pending")  # the jobs table is filled
        os.write(master, b"\r")  # the newest job, the filter job: the paths it judged
        seen = _read_until(master, proc, seen, rb"Training set")
        lock = sqlite3.connect(str(db), isolation_level=None, timeout=0)
        lock.execute("BEGIN EXCLUSIVE")  # held until the app has ended: longer than any retry
        for key in (b"a", b"a", b"x"):
            os.write(master, key)
        _read_until(master, proc, seen, re.escape("✗ reject".encode()))  # the last key was handled: all three are made
        os.close(master)
        master = -1
        assert proc.wait(timeout=120) == hangup.HANGUP_EXIT_CODE
        kept = decision_journal.last_decisions(decision_journal.read(journal)[0])
        assert {pid: d for pid, (d, _at) in kept.items()} == {
            ids[0]: "accepted",
            ids[1]: "accepted",
            ids[2]: "rejected",
        }
        rows = lock.execute("SELECT COUNT(*) FROM paths WHERE decision IS NOT NULL").fetchone()
        assert rows == (0,)  # nothing reached the workspace: the journal is what kept them
    finally:
        end(proc, master, lock)

    got, listed_err = decisions_at_next_start(cmd, db, sample)
    assert (got[ids[0]], got[ids[1]], got[ids[2]]) == ("accepted", "accepted", "rejected")
    assert sum(d is not None for d in got.values()) == 3
    note = f"note: re-applied 3 decisions that could not be written earlier (kept in {journal})"
    assert note in listed_err.splitlines()
    assert not journal.exists()
