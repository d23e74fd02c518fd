"""A damaged workspace through the real commands: ``sert-tui --db BAD data list`` and the app entry
``sert-tui --db BAD`` (no subcommand, in a pseudo-terminal). Each case prints one clear ``error:`` line, exits
with code 2, never shows a traceback, and leaves the file byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability import stats
from tests.reliability.harness import ROOT, SERT, child_env, cli, copy_workspace

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[@-Z\\-_])")


def _truncate(n: int | Callable[[int], int]) -> Callable[[Path, Path], None]:
    def make(good: Path, bad: Path) -> None:
        data = good.read_bytes()
        size = n(len(data)) if callable(n) else n
        bad.write_bytes(data[:size])

    return make


def _write(content: bytes) -> Callable[[Path, Path], None]:
    return lambda _good, bad: bad.write_bytes(content)


def _newer(good: Path, bad: Path) -> None:
    shutil.copy(good, bad)
    conn = sqlite3.connect(str(bad))
    conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    conn.execute("CREATE TABLE future_feature (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _foreign(_good: Path, bad: Path) -> None:
    conn = sqlite3.connect(str(bad))
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('somebody else''s data')")
    conn.commit()
    conn.close()


def _directory(_good: Path, bad: Path) -> None:
    bad.mkdir()
    (bad / "inside.txt").write_text("a directory where the workspace file should be")


def _corrupt_middle(good: Path, bad: Path) -> None:
    """Pages inside overwritten: the header and schema read fine, the questions' pages do not."""
    data = bytearray(good.read_bytes())
    start = len(data) // 3
    data[start : start + 8192] = b"\xab" * 8192
    bad.write_bytes(bytes(data))


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "truncated-50-bytes": (_truncate(50), "damaged workspace"),
    "truncated-first-page": (_truncate(4096), "damaged workspace"),
    "truncated-half": (_truncate(lambda n: n // 2), "damaged workspace"),
    "truncated-last-page": (_truncate(lambda n: n - 4096), "damaged workspace"),
    "text-file": (_write(b"these are my notes, not a database\n"), "not a sert-tui workspace"),
    "json-file": (_write(b'{"workspace": "no"}'), "not a sert-tui workspace"),
    "random-bytes": (_write(bytes((i * 7919 + 13) % 256 for i in range(10_000))), "not a sert-tui workspace"),
    "directory": (_directory, "is a directory"),
    "foreign-sqlite": (_foreign, "not a sert-tui workspace"),
    "newer-schema": (_newer, "newer than this sert-tui knows"),
}
APP_CASES = ["truncated-first-page", "text-file", "newer-schema", "directory", "foreign-sqlite"]


@pytest.fixture(scope="module")
def good(sqa_template, tmp_path_factory) -> Path:
    """A real workspace with StrategyQA imported (about 1 MB), in rollback-journal form on disk."""
    path = copy_workspace(sqa_template, tmp_path_factory.mktemp("good") / "good.db")
    return path


def _file_hash(path: Path) -> str:
    if path.is_dir():
        return "dir:" + ",".join(sorted(f"{p.name}:{p.stat().st_size}" for p in path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: Path) -> dict[str, str]:
    """The workspace file and its side files (``-wal``, ``-shm``, ``-journal``): none may change or appear."""
    return {p.name: _file_hash(p) for p in sorted(path.parent.glob(f"{path.name}*"))}


def check_one_error_line(stderr: str, expected: str, path: Path) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    text = ANSI.sub("", stderr)
    at = text.rfind("error: ")
    assert at >= 0, f"no error line in: {text[-2000:]!r}"
    tail = text[at:].strip()
    lines = tail.splitlines()
    assert len(lines) == 1, f"more than one line: {tail!r}"
    assert expected in lines[0] and str(path.name) in lines[0], lines[0]
    assert len(lines[0]) < 300
    return lines[0]


def make_case(name: str, good: Path, tmp_path: Path) -> tuple[Path, str]:
    make, expected = CASES[name]
    bad = tmp_path / f"{name}.db"
    make(good, bad)
    return bad, expected


@pytest.mark.parametrize("name", list(CASES))
def test_data_list_on_a_damaged_workspace(name: str, good: Path, tmp_path: Path) -> None:
    bad, expected = make_case(name, good, tmp_path)
    before = fingerprint(bad)
    result = cli(bad, "data", "list", timeout=120)
    stats.faults["damaged workspace (data list)"] += 1
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert result.stdout == ""
    check_one_error_line(result.stderr, expected, bad)
    assert fingerprint(bad) == before, "the damaged file was changed"


def test_damage_found_only_when_a_command_reads_the_page(good: Path, tmp_path: Path) -> None:
    """The header and schema are intact, a page inside is not: opening passes, the read fails with one line."""
    bad = tmp_path / "corrupt-middle.db"
    _corrupt_middle(good, bad)
    config = tmp_path / "all.toml"
    config.write_text('[data]\ndataset = "sqa"\n[sampling]\nbackend = "hf"\n', encoding="utf-8")
    before = fingerprint(bad)
    result = cli(bad, "run", str(config), "--stage", "sample", timeout=120)
    stats.faults["damaged workspace (page inside)"] += 1
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    check_one_error_line(result.stderr, "damaged workspace (database disk image is malformed)", bad)
    assert fingerprint(bad) == before


def run_app_in_pty(db: Path, timeout: float = 90) -> tuple[int, str]:
    """``sert-tui --db DB`` with a pseudo-terminal as stdin/stdout (Textual draws on stderr)."""
    master, slave = pty.openpty()
    env = child_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(
        [str(SERT), "--db", str(db)],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
        close_fds=True,
    )
    os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the app did not exit on a damaged workspace within {timeout:.0f} s")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    os.read(master, 65536)
                except OSError:
                    pass
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    finally:
        os.close(master)
    return proc.wait(), stderr


@pytest.mark.parametrize("name", APP_CASES)
def test_the_app_on_a_damaged_workspace(name: str, good: Path, tmp_path: Path) -> None:
    bad, expected = make_case(name, good, tmp_path)
    before = fingerprint(bad)
    code, stderr = run_app_in_pty(bad)
    stats.faults["damaged workspace (app)"] += 1
    assert code == 2, stderr[-2000:]
    check_one_error_line(stderr, expected, bad)
    assert fingerprint(bad) == before, "the damaged file was changed"
