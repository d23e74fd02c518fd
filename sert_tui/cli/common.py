"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `sert-tui` with no command starts the app: its first frame does not wait for SQLAlchemy
    from sqlalchemy.engine import Engine


def workspace_path(args: argparse.Namespace) -> Path:
    """The workspace file of ``--db``, else the default one in the user data directory."""
    if args.db is not None:
        return args.db
    from db.session import default_workspace_path  # SQLAlchemy: not imported when --db names the file

    return default_workspace_path()


def open_db(args: argparse.Namespace) -> Engine:
    from db.session import open_workspace

    return open_workspace(workspace_path(args))


def open_db_with_decisions(args: argparse.Namespace) -> Engine:
    """The workspace of a command that reads people's decisions (``paths``, ``export``), with the decisions
    the app had to keep in its journal applied first (said on stderr: with ``--json`` stdout holds the one
    JSON document); an ``error:`` naming the journal when they cannot be (db.decision_journal.apply_pending)."""
    from db.decision_journal import apply_pending

    engine = open_db(args)
    apply_pending(engine, stderr, attempts=1)
    return engine


#: Whether this command has printed its JSON document (``--json``: exactly one per command, error or not).
_JSON_OUTPUT = {"printed": False}


def print_json(value: Any) -> None:
    """The command's one JSON document on stdout (``--json``); logs and progress go to stderr."""
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()
    _JSON_OUTPUT["printed"] = True


def reset_json_output() -> None:
    _JSON_OUTPUT["printed"] = False


def print_json_error(message: str) -> None:
    """The JSON document of a command that failed with ``--json``: ``{"error": message}`` -- unless the command
    printed its own already (``run`` adds the jobs it touched). Only the process that owns the output prints
    (rank 0 of a multi-process run)."""
    from engine.ranks import is_main_process

    if not _JSON_OUTPUT["printed"] and is_main_process():
        print_json({"error": message})


def error_text(exc: BaseException) -> str:
    """The error of a failed command in one line, as its JSON document's ``"error"``."""
    from db.errors import first_line

    return "interrupted" if isinstance(exc, KeyboardInterrupt) else first_line(exc)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned text table for the terminal."""
    if not rows:
        print("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
