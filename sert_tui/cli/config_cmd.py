"""``sert-tui config``: write a commented experiment config (``--preset cpu``, the defaults, or ``paper``), or
check one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="experiment configs")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    init = config_sub.add_parser("init", help="write a commented config (stdout if no FILE)")
    init.add_argument("file", nargs="?", type=Path)
    init.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu (default): 3 training epochs at lr 1e-4, the recipe of the training sweep (docs/results.md); "
        "paper: the paper's values (20 epochs, batch 8, lr 3e-4)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)
    check = config_sub.add_parser("check", help="validate a config and print it with defaults filled in")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check)


def cmd_init(args: argparse.Namespace) -> int:
    from engine.config import render_default_config

    text = render_default_config(args.preset)
    if args.file is None:
        sys.stdout.write(text)
        return 0
    from engine.files import new_file

    with new_file(args.file, force=args.force) as handle:
        handle.write(text)
    print(f"wrote {args.file}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import tomli_w

    from engine.config import load_config

    cfg = load_config(args.file)
    sys.stdout.write(tomli_w.dumps(cfg.model_dump(exclude_none=True)))
    return 0
