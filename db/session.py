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

from db.errors import WorkspaceError, first_line

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


#: Workspace files this process has opened engines on (see _check_file).
_OPENED: set[str] = set()


def make_engine(path: Path | str) -> Engine:
    _OPENED.add(str(Path(path).resolve()))
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _set_pragmas)
    return engine


def _check_file(path: Path) -> None:
    """Refuse files that are not SQLite databases before SQLite or alembic touch them."""
    if path.is_dir():
        raise WorkspaceError(f"{path}: is a directory, not a workspace file")
    if not path.exists() or path.stat().st_size == 0:
        return
    if str(path.resolve()) in _OPENED:
        # Never open() a file this process already has SQLite connections on: closing any descriptor of it
        # drops the process's POSIX locks, and another process could then reset the WAL under them.
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


def _inspect(path: Path) -> tuple[str | None, bool]:
    """(alembic revision or None, whether the file has tables other than alembic's), read only."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        revision = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        return revision, any(t != "alembic_version" and not t.startswith("sqlite_") for t in tables)
    finally:
        conn.close()


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the first byte: the workspace may hold private data.
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.close(fd)
        except OSError as exc:
            raise WorkspaceError(f"{path}: cannot create the workspace ({exc.strerror or exc})") from None
    # Read what the file is with a plain connection, which writes nothing: a damaged, foreign or newer file
    # must come out byte for byte as it went in (the engine's WAL pragma would rewrite a foreign header).
    try:
        current, has_tables = _inspect(path)
    except sqlite3.DatabaseError as exc:
        raise WorkspaceError(f"{path}: damaged workspace ({first_line(exc)})") from None
    head = head_revision()
    if current is None and has_tables:
        # Migrations run in one transaction, so a sert-tui file always has its version row: tables without
        # one belong to another program's database, which must not get our tables added.
        raise WorkspaceError(f"{path}: not a sert-tui workspace (an SQLite database of another program)")
    if current is not None and current != head and current not in _known_revisions():
        raise WorkspaceError(
            f"{path}: workspace schema {current} is newer than this sert-tui knows (up to {head}); "
            "upgrade sert-tui to open it"
        )
    engine = make_engine(path)
    if current == head:
        return engine
    if upgrade:
        try:
            migrate(engine)
        except Exception as exc:
            engine.dispose()
            raise WorkspaceError(f"{path}: could not upgrade the workspace schema: {first_line(exc)}") from None
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
