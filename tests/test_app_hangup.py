"""The app ends when its terminal goes away (a closed window, a dropped SSH session, a killed tmux pane)
instead of spinning on a dead terminal, and writes the decisions already made first."""

from __future__ import annotations

import os
import pty
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
