"""``sert-tui workspace merge``: merge shard workspaces into one, without duplicates."""

from __future__ import annotations

import argparse
from pathlib import Path

from sert_tui.cli.common import print_json, stderr


def register(sub: argparse._SubParsersAction) -> None:
    ws = sub.add_parser("workspace", help="workspace files")
    ws_sub = ws.add_subparsers(dest="workspace_command", metavar="ACTION", required=True)
    merge = ws_sub.add_parser("merge", help="merge workspaces (e.g. the shards of a sharded run) into one")
    merge.add_argument("sources", nargs="+", type=Path, metavar="DB")
    merge.add_argument("--into", type=Path, required=True, help="target workspace (created if missing)")
    merge.add_argument("--json", action="store_true", help="print the rows added per table as JSON")
    merge.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from engine.merge import merge_workspaces

    counts = merge_workspaces(args.sources, args.into, echo=stderr)
    if args.json:
        print_json(counts)
    else:
        added = ", ".join(f"{n} {table}" for table, n in counts.items() if n) or "nothing new"
        print(f"merged {len(args.sources)} workspace(s) into {args.into}: {added}")
    return 0
