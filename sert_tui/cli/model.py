"""``sert-tui model prepare``: make a student model loadable offline and print where it is."""

from __future__ import annotations

import argparse

from sert_tui.cli.common import open_db, stderr


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="student models")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    prep = model_sub.add_parser("prepare", help="convert/download a model once and print its directory")
    prep.add_argument("model", nargs="?", default="default", help='"default", a hub id or a local directory')
    prep.add_argument("--no-register", action="store_true", help="do not record the model in the workspace")
    prep.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from db.queries import register_model
    from db.session import session_scope
    from engine.models import model_source, prepare_model

    path = prepare_model(args.model, progress=stderr)
    if not args.no_register:
        with session_scope(open_db(args)) as session:
            register_model(session, args.model, model_source(args.model), str(path))
    print(path)
    return 0
