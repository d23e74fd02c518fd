"""End to end in a real terminal: the `sert-tui` command in tmux, driven by send-keys and read by capture-pane.

A fresh workspace → `d` starts the embedded default job (the real engine and the bundled student, kept tiny
through the default job's config file beside the workspace) → paths appear → the paths screen → accept and
reject a few → quit (cancelling the job the app started) → the workspace holds exactly those decisions.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)"),
    pytest.mark.slow,
    pytest.mark.model,
]

TINY_DEFAULT = """\
name = "default"
[student]
model = "default"
device = "cpu"
[data]
dataset = "basic_arithmetic"
train_limit = 2
[sampling]
first_tokens = 3
per_branch = 2
max_new_tokens = 12
"""


class Tmux:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        """``argv`` of two or more items: tmux (3.0 and newer) runs it directly, no shell in between."""
        self.name = name
        self.env = env
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", *argv], check=True, env=env)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True, env=self.env)
        time.sleep(0.3)

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, env=self.env
        )
        return out.stdout

    def alive(self) -> bool:
        return (
            subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True, env=self.env).returncode == 0
        )

    def wait_text(self, text: str, timeout: float) -> str:
        start = time.time()
        while time.time() - start < timeout:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not on screen after {timeout}s:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, env=self.env)


def query(db: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def wait_db(db: Path, sql: str, check, timeout: float) -> list[tuple]:
    start = time.time()
    while time.time() - start < timeout:
        if db.exists():
            try:
                rows = query(db, sql)
                if check(rows):
                    return rows
            except sqlite3.OperationalError:
                pass  # not migrated yet
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting on {sql}")


def test_default_job_curated_in_a_real_terminal(tmp_path):
    db = tmp_path / "workspace.db"
    (tmp_path / "workspace.default.toml").write_text(TINY_DEFAULT)
    exe = ROOT / ".venv" / "bin" / "sert-tui"
    command = [str(exe), "--db", str(db)] if exe.exists() else [sys.executable, "-m", "sert_tui", "--db", str(db)]
    env = {**os.environ, "TERM": "xterm-256color", "TMUX": ""}
    session = Tmux(f"sert-e2e-{os.getpid()}", command, env)
    job_pids: set[int] = set()
    try:
        session.wait_text("A fresh workspace", timeout=60)
        session.keys("d")
        session.wait_text("sample+filter", timeout=30)  # the launched process is listed
        # The real engine loads the bundled student and writes the first question's paths.
        wait_db(db, "SELECT count(*) FROM paths", lambda rows: rows[0][0] >= 6, timeout=600)
        job_pids |= {r[0] for r in query(db, "SELECT pid FROM jobs WHERE pid IS NOT NULL")}
        session.keys("Enter")  # the newest job: sample (or, if it already finished, filter: the same paths)
        screen = session.wait_text("Training set (self-train)", timeout=30)
        assert "rules" in screen and "decision" in screen
        ids = [r[0] for r in query(db, "SELECT id FROM paths ORDER BY id LIMIT 3")]
        session.keys("a")
        session.keys("x")
        session.keys("a")
        wait_db(db, "SELECT count(*) FROM paths WHERE decision IS NOT NULL", lambda rows: rows[0][0] == 3, 30)
        screen = session.wait_text("✓ accept", timeout=10)
        assert "✗ reject" in screen
        decided = dict(query(db, "SELECT id, decision FROM paths WHERE decision IS NOT NULL"))
        assert decided == {ids[0]: "accepted", ids[1]: "rejected", ids[2]: "accepted"}
        session.keys("BSpace")  # undo the last one
        wait_db(db, "SELECT count(*) FROM paths WHERE decision IS NOT NULL", lambda rows: rows[0][0] == 2, 30)
        session.keys("Escape")
        session.wait_text("Jobs", timeout=10)
        job_pids |= {r[0] for r in query(db, "SELECT pid FROM jobs WHERE pid IS NOT NULL")}
        session.keys("q")
        time.sleep(1.0)
        if "still run" in session.screen():
            session.keys("c")  # cancel the job this app started, then quit
        start = time.time()
        while session.alive() and time.time() - start < 30:
            time.sleep(0.5)
        assert not session.alive(), session.screen()  # the app quit (the session ends with it)
        # Whatever the job did meanwhile, the person's decisions are in the workspace, exactly.
        decided = dict(query(db, "SELECT id, decision FROM paths WHERE decision IS NOT NULL"))
        assert decided == {ids[0]: "accepted", ids[1]: "rejected"}
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
        # The job process stops: cancelled on the way out, or finished.
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and query(db, "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')")[0][0]
        ):
            time.sleep(1.0)
        statuses = [r[0] for r in query(db, "SELECT status FROM jobs")]
        assert statuses and all(s in ("completed", "cancelled") for s in statuses), statuses
    finally:
        session.kill()
        for pid in job_pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
