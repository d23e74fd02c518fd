"""The SQLite workspace: pragmas, permissions, migrations, and refusal of damaged or newer files."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from db.errors import WorkspaceError
from db.session import current_revision, head_revision, make_engine, migrate, open_workspace


def test_pragmas_wal_foreign_keys_busy_timeout(engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_workspace_file_is_owner_only(db_path: Path, engine) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_schema_matches_the_models(engine) -> None:
    """Every table change needs a migration: the migrated schema equals the SQLModel metadata."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import db.models  # noqa: F401

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_unique_path_key_makes_rewrites_idempotent(engine, sqa) -> None:
    from sqlmodel import func, select

    from db.models import Path as PathRow
    from db.paths_repo import done_question_ids, write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.jobs import create_job

    job = create_job(engine, "sample", {}, dataset_id=sqa.id)
    rows = [{"branch": b, "sample": s, "text": f"path {b}.{s}", "tokens": 3} for b in range(2) for s in range(2)]
    with session_scope(engine) as s:
        q = split_questions(s, sqa.id, "train", limit=1)[0]
        assert write_question_paths(s, job.id, q.id, rows) == 4
    with session_scope(engine) as s:
        assert write_question_paths(s, job.id, q.id, rows) == 0
        assert s.exec(select(func.count()).select_from(PathRow)).one() == 4
        assert done_question_ids(s, job.id) == {q.id}


def test_foreign_keys_are_enforced(engine) -> None:
    from sqlalchemy.exc import IntegrityError

    from db.models import Question
    from db.session import session_scope

    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Question(dataset_id=999, split="train", index=0, position=0, text="q", answer="yes"))


def test_upgrade_from_first_revision_keeps_rows(db_path: Path) -> None:
    engine = make_engine(db_path)
    migrate(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, task, answer_type, source, origin, created_at, meta) "
                "VALUES ('old', 'strategy_qa', 'yes_no', 'jsonl', 'f', '2026-01-01 00:00:00', '{}')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO questions (dataset_id, split, "index", position, text, answer, meta) '
                "VALUES (1, 'train', 0, 0, 'Is it?', 'yes', '{}')"
            )
        )
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert "evaluations" not in tables
    engine.dispose()

    upgraded = open_workspace(db_path)
    assert current_revision(upgraded) == head_revision()
    with upgraded.connect() as conn:
        assert conn.execute(text("SELECT name FROM datasets")).scalar() == "old"
        assert conn.execute(text("SELECT text FROM questions")).scalar() == "Is it?"
        assert conn.execute(text("SELECT COUNT(*) FROM evaluations")).scalar() == 0


def test_upgrade_from_0002_adds_path_confidence_and_keeps_paths(db_path: Path) -> None:
    """A workspace of revision 0002 with sampled paths upgrades: its paths stay, their confidence is NULL (not
    measured when they were sampled), and new paths can carry one."""
    engine = make_engine(db_path)
    migrate(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, task, answer_type, source, origin, created_at, meta) "
                "VALUES ('old', 'strategy_qa', 'yes_no', 'jsonl', 'f', '2026-01-01 00:00:00', '{}')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO questions (dataset_id, split, "index", position, text, answer, meta) '
                "VALUES (1, 'train', 0, 0, 'Is it?', 'yes', '{}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (kind, status, config, label, fingerprint, cancel_requested, created_at, "
                "progress_done, progress_total, message, host, summary) "
                "VALUES ('sample', 'completed', '{}', '', 'f', 0, '2026-01-01 00:00:00', 1, 1, '', '', '{}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO paths (job_id, question_id, source, branch, sample, branch_token, text, tokens, "
                "rep2, verdicts, selected, answer, created_at) "
                "VALUES (1, 1, 'self', 0, 0, ' Yes', ' Yes, it is.', 5, 0.1, '{}', 0, 'yes', '2026-01-01 00:00:00')"
            )
        )
        columns = {r[1] for r in conn.execute(text("PRAGMA table_info(paths)"))}
    assert "confidence" not in columns
    engine.dispose()

    upgraded = open_workspace(db_path)
    assert current_revision(upgraded) == head_revision()
    with upgraded.begin() as conn:
        assert conn.execute(text("SELECT text, answer, confidence FROM paths")).one() == (" Yes, it is.", "yes", None)
        conn.execute(text("UPDATE paths SET confidence = 0.25"))
        assert conn.execute(text("SELECT confidence FROM paths")).scalar() == 0.25


def test_newer_schema_is_refused_and_left_untouched(db_path: Path) -> None:
    open_workspace(db_path).dispose()
    con = sqlite3.connect(db_path)
    con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.commit()
    con.close()
    before = db_path.read_bytes()
    with pytest.raises(WorkspaceError, match="newer than this sert-tui"):
        open_workspace(db_path)
    assert db_path.read_bytes() == before


def test_not_sqlite_and_truncated_files_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("hello, I am not a database\n")
    with pytest.raises(WorkspaceError, match="not an SQLite database"):
        open_workspace(notes)
    assert notes.read_text() == "hello, I am not a database\n"

    good = tmp_path / "good.db"
    open_workspace(good).dispose()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(WorkspaceError):
        open_workspace(truncated)


def test_cli_reports_a_damaged_workspace_in_one_line(tmp_path: Path, capsys) -> None:
    from sert_tui.cli import main

    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["--db", str(bad), "data", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an SQLite database" in err
