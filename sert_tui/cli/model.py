"""``sert-tui model prepare``: make a student model loadable offline and print where it is."""

from __future__ import annotations

import argparse

from sert_tui.cli.common import stderr


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="student models")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    prep = model_sub.add_parser("prepare", help="convert/download a model once and print its directory")
    prep.add_argument("model", nargs="?", default="default", help='"default", a hub id or a local directory')
    prep.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from engine.models import prepare_model

    print(prepare_model(args.model, progress=stderr))
    return 0
