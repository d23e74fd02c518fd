"""Opening a workspace: SQLite engine with WAL, foreign keys and a busy timeout, and schema migration.

Opening an older workspace upgrades it to the newest schema; a workspace written by a newer sert-tui is
refused with a clear message, and nothing in it is touched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from engine.errors import WorkspaceError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
SQLITE_MAGIC = b"SQLite format 3\x00"


def default_workspace_path() -> Path:
    """The workspace used when ``--db`` is not given: a file in the user's data directory."""
    from platformdirs import user_data_dir

    override = os.environ.get("SERT_TUI_DB")
    if override:
        return Path(override)
    return Path(user_data_dir("sert-tui", appauthor=False)) / "workspace.db"


def _set_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(path: Path | str) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _set_pragmas)
    return engine


def _check_file(path: Path) -> None:
    """Refuse files that are not SQLite databases before SQLite or alembic touch them."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise WorkspaceError(f"{path}: not a sert-tui workspace (not an SQLite database)")


def _alembic_config(engine: Engine):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        has_table = conn.execute(
            text("SELECT name FROM sqlite_master WHERE type='table' AND name='alembic_version'")
        ).first()
        if not has_table:
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return row[0] if row else None


def migrate(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    return {rev.revision for rev in script.walk_revisions()}


def open_workspace(path: Path | str, *, create: bool = True, upgrade: bool = True) -> Engine:
    """Open (and create or upgrade) the workspace at ``path``; returns a SQLAlchemy engine."""
    path = Path(path).expanduser()
    _check_file(path)
    if not path.exists():
        if not create:
            raise WorkspaceError(f"{path}: no such workspace")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only from the first byte: the workspace may hold private data.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(fd)
    engine = make_engine(path)
    try:
        current = current_revision(engine)
    except Exception as exc:  # sqlite3.DatabaseError for a damaged file
        engine.dispose()
        raise WorkspaceError(f"{path}: damaged workspace ({exc.__class__.__name__}: {exc})") from None
    head = head_revision()
    if current == head:
        return engine
    if current is not None and current not in _known_revisions():
        engine.dispose()
        raise WorkspaceError(
            f"{path}: workspace schema {current} is newer than this sert-tui knows (up to {head}); "
            "upgrade sert-tui to open it"
        )
    if upgrade:
        try:
            migrate(engine)
        except Exception as exc:
            engine.dispose()
            raise WorkspaceError(f"{path}: could not upgrade the workspace schema: {exc}") from None
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
