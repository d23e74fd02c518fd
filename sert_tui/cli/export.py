"""``sert-tui export``: a training set or a job's paths as prompt/completion records (JSONL or a datasets
folder) for TRL's SFTTrainer or any other trainer; a job's metric rows as CSV or JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path

from sert_tui.cli.common import open_db, open_db_with_decisions, print_json, stderr
from sert_tui.cli.paths import DECISION_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    from engine.export import FORMATS, METRIC_FORMATS, SETS

    export = sub.add_parser("export", help="training sets and paths as prompt/completion records")
    export_sub = export.add_subparsers(dest="export_command", metavar="WHAT", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="file (jsonl) or folder (dataset) to write")
        parser.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default) or dataset")
        parser.add_argument("--force", action="store_true", help="overwrite an existing file or folder")
        parser.add_argument("--json", action="store_true", help="print {file, records, format} as JSON")

    train = export_sub.add_parser("set", help="the samples a training stage of a config trains on")
    train.add_argument("config", type=Path)
    train.add_argument("--stage", choices=SETS, required=True)
    common(train)
    train.set_defaults(func=cmd_set)

    paths = export_sub.add_parser("paths", help="a sample (or filter) job's paths in the SERT training format")
    paths.add_argument("--job", type=int, required=True)
    paths.add_argument("--decision", choices=DECISION_CHOICES, default=None, help="only paths with this decision")
    paths.add_argument("--selected", action="store_true", help="only paths the rules selected")
    common(paths)
    paths.set_defaults(func=cmd_paths)

    metrics = export_sub.add_parser(
        "metrics", help="every metric row of a job (step, name, value, time) as CSV or JSONL"
    )
    metrics.add_argument("--job", type=int, required=True, help="the job's id (sert-tui jobs list)")
    metrics.add_argument(
        "--format", choices=METRIC_FORMATS, default="csv", help="csv (default, with a header) or jsonl"
    )
    metrics.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    metrics.add_argument("--force", action="store_true", help="overwrite an existing file")
    metrics.set_defaults(func=cmd_metrics)


def _report(args: argparse.Namespace, records: list[dict]) -> int:
    from engine.export import write_records

    out = write_records(records, args.out, args.format, force=args.force)
    if args.json:
        print_json({"file": str(out), "records": len(records), "format": args.format})
    else:
        print(f"wrote {len(records)} records to {out} ({args.format})")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.export import sample_records, training_set
    from engine.files import refuse_existing

    config = load_config(args.config)
    refuse_existing(args.out, args.force)  # before the set is built
    engine = open_db_with_decisions(args)
    samples, notes = training_set(engine, config, args.stage)
    for note in notes:
        stderr(note)
    return _report(args, sample_records(engine, samples))


def cmd_paths(args: argparse.Namespace) -> int:
    from engine.export import path_records
    from engine.files import refuse_existing

    refuse_existing(args.out, args.force)
    return _report(args, path_records(open_db_with_decisions(args), args.job, args.decision, args.selected))


def cmd_metrics(args: argparse.Namespace) -> int:
    import sys

    from engine.export import metric_records, render_metrics
    from engine.files import new_file, refuse_existing

    if args.out is not None:
        refuse_existing(args.out, args.force)
    records = metric_records(open_db(args), args.job)
    text = render_metrics(records, args.format)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    with new_file(args.out, force=args.force) as handle:
        handle.write(text)
    stderr(f"wrote {len(records)} metric rows of job {args.job} to {args.out} ({args.format})")
    return 0
