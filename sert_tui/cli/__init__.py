"""The ``sert-tui`` command: no subcommand opens the app; subcommands run the same engine headless.

Each command group lives in its own module with a ``register(subparsers)`` function. Heavy imports
(torch, transformers, datasets) happen inside the commands, never at start-up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sert_tui.cli import config_cmd, data, export, jobs, model, paths, report, run, study, teacher, workspace
from sert_tui.cli.common import workspace_path

GROUPS = (data, model, config_cmd, run, study, jobs, paths, report, export, teacher, workspace)


class Parser(argparse.ArgumentParser):
    """argparse, remembering its usage error so that ``--json`` can print it as the command's JSON document."""

    last_error: str | None = None

    def error(self, message: str):  # type: ignore[override]
        Parser.last_error = f"{self.prog}: {message}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sert-tui",
        description="Self-Enhanced Reasoning Training for small language models. "
        "With no command, opens the app on the workspace.",
    )
    parser.add_argument("--db", type=Path, default=None, help="workspace file (default: in the user data dir)")
    parser.add_argument("--version", action="version", version="sert-tui 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Failures: exit code 2 and one ``error: ...`` line on stderr; with ``--json`` stdout is
    always exactly one JSON document, the command's result or, on failure, ``{"error": ...}`` (``run`` adds
    ``"jobs"``: those it touched, and how they ended)."""
    from db.errors import UserError, first_line
    from sert_tui.cli.common import print_json_error, reset_json_output

    argv = list(sys.argv[1:] if argv is None else argv)
    reset_json_output()
    parser = build_parser()
    Parser.last_error = None
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its usage and error on stderr
        if exc.code not in (0, None) and "--json" in argv:
            print_json_error(Parser.last_error or "bad command line")
        raise
    as_json = bool(getattr(args, "json", False))

    def fail(message: str, stderr_line: str | None = None) -> None:
        print(stderr_line or f"error: {message}", file=sys.stderr)
        if as_json:
            print_json_error(message)

    try:
        if args.command is None:
            from sert_tui.app import run_app

            return run_app(workspace_path(args))
        return int(args.func(args) or 0)
    except UserError as exc:
        fail(str(exc))
        return 2
    except KeyboardInterrupt:
        fail("interrupted", "interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        damage = damaged_workspace(exc)
        if damage is None:
            if as_json:  # a bug: its traceback follows on stderr
                print_json_error(f"{exc.__class__.__name__}: {first_line(exc)}")
            raise
        fail(f"{workspace_path(args)}: damaged workspace ({damage})")
        return 2


#: SQLite errors that mean the file (or its disk) is damaged, not that sert-tui has a bug.
DAMAGE_MESSAGES = ("malformed", "not a database", "disk i/o error", "database or disk is full")


def damaged_workspace(exc: BaseException) -> str | None:
    """The one-line SQLite message when ``exc`` says the workspace file is damaged (found only when a command
    reads a damaged page: opening checks the header and schema only), else None."""
    import sqlite3

    cause = getattr(exc, "orig", None) or exc
    if not isinstance(cause, sqlite3.DatabaseError):
        return None
    from db.errors import first_line

    message = first_line(cause)
    return message if any(m in message.lower() for m in DAMAGE_MESSAGES) else None
