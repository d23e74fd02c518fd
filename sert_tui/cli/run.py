"""``sert-tui run CONFIG --stage NAME``: run a pipeline stage headless, printing progress to stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

from sert_tui.cli.common import open_db, print_json, stderr


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a stage of an experiment config headless")
    run.add_argument("config", type=Path, help="experiment config (TOML; see `sert-tui config init`)")
    run.add_argument("--stage", required=True, help="sample | filter | self-train | teacher | distill | eval | all")
    run.add_argument("--json", action="store_true", help='end by printing {"jobs": [{"id", "kind", "status"}]}')
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.pipeline import run_stage
    from sert_tui.cli.jobs import job_row

    config = load_config(args.config)
    engine = open_db(args)
    jobs = run_stage(engine, config, args.stage, stderr)
    if args.json:
        print_json({"jobs": [job_row(j) for j in jobs]})
    else:
        for job in jobs:
            print(f"job {job.id} {job.kind}: {job.status}")
    return 0 if all(j.status == "completed" for j in jobs) else 1
