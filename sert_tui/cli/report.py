"""``sert-tui report``: summaries of finished work. One function pair (register + command) per report."""

from __future__ import annotations

import argparse
from typing import Any

from sert_tui.cli.common import open_db, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="reports on jobs (filters, ...)")
    report_sub = report.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    register_filters(report_sub)
    register_runs(report_sub)


# -- report filters ---------------------------------------------------------------------------------------
def register_filters(report_sub: argparse._SubParsersAction) -> None:
    p = report_sub.add_parser("filters", help="paths each filter removed, in the order applied (paper Fig. 4)")
    p.add_argument("--job", type=int, required=True, help="filter job id (or a sample job: its current verdicts)")
    p.add_argument("--json", action="store_true", help='print {"job","questions","paths","removed","selected"}')
    p.set_defaults(func=cmd_filters)


def filters_report(session: Any, job_id: int) -> dict[str, Any]:
    """Counts of a filter job (from its summary) or of a sample job (from its paths' current verdicts).

    Keys: job, sample_job, rules, questions, paths, removed (by the first rule that dropped a path),
    failed (each rule on its own), selected.
    """
    from sqlmodel import select

    from db.models import Job, Path
    from engine import filters
    from engine.errors import UserError

    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"no job with id {job_id}")
    if job.kind == "filter":
        summary = job.summary or {}
        if job.status != "completed" or "removed" not in summary:
            raise UserError(f"filter job {job_id} has not completed ({job.status})")
        counts = {k: summary[k] for k in ("questions", "paths", "removed", "selected")}
        counts["failed"] = summary.get("failed", {})
        sample_job = job.parent_id
    elif job.kind == "sample":
        rows = session.exec(
            select(Path.question_id, Path.verdicts, Path.selected).where(
                Path.job_id == job_id,
                Path.passed.is_not(None),  # type: ignore[union-attr]
            )
        ).all()
        if not rows:
            raise UserError(f"sample job {job_id} has no filtered paths: run --stage filter first")
        rules = filters.rules_of(rows[0][1])
        counts = filters.count_verdicts(rows, rules)
        sample_job = job_id
    else:
        raise UserError(f"job {job_id} is a {job.kind!r} job; report filters needs a filter or sample job")
    return {"job": job_id, "sample_job": sample_job, **counts}


def cmd_filters(args: argparse.Namespace) -> int:
    from db.session import session_scope

    with session_scope(open_db(args)) as session:
        report = filters_report(session, args.job)
    if args.json:
        print_json({k: report[k] for k in ("job", "questions", "paths", "removed", "selected")})
        return 0
    print(
        f"filters of job {report['job']} (paths of sample job {report['sample_job']}): "
        f"{report['questions']} questions, {report['paths']} paths"
    )
    left = report["paths"]
    rows = []
    for rule, removed in report["removed"].items():
        left -= removed
        rows.append({"rule": rule, "removed": removed, "left": left, "fails alone": report["failed"].get(rule)})
    rows.append({"rule": "selection", "removed": left - report["selected"], "left": report["selected"]})
    print_table(rows, ["rule", "removed", "left", "fails alone"])
    return 0


# -- report runs ------------------------------------------------------------------------------------------
def register_runs(report_sub: argparse._SubParsersAction) -> None:
    p = report_sub.add_parser("runs", help="evaluated models side by side, laid out like the paper's Table II")
    p.add_argument(
        "--json", action="store_true", help="print a list of {label, checkpoint, dataset, split, n, acc, fmt, len, rep}"
    )
    p.set_defaults(func=cmd_runs)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def cmd_runs(args: argparse.Namespace) -> int:
    from db.session import session_scope
    from engine.evaluation.report import JSON_KEYS, run_rows, table_two

    with session_scope(open_db(args)) as session:
        rows = run_rows(session)
    if args.json:
        print_json([{k: r[k] for k in JSON_KEYS} for r in rows])
        return 0
    if not rows:
        print("no evaluations yet: run a config with --stage eval (or --stage all)")
        return 0
    labels, lines = table_two(rows)
    print("Accuracy (%), newest evaluation per label (paper Table II layout)")
    print_table(
        [
            {**{k: line[k] for k in ("student", "dataset", "split")}, **{lbl: _pct(line.get(lbl)) for lbl in labels}}
            for line in lines
        ],
        ["student", "dataset", "split", *labels],
    )
    print()
    print("All evaluations")
    detail = [
        {
            "eval": r["evaluation"],
            "label": r["label"],
            "dataset": r["dataset"],
            "split": r["split"],
            "n": r["n"],
            "Acc %": _pct(r["acc"]),
            "Fmt %": _pct(r["fmt"]),
            "Len": None if r["len"] is None else f"{r['len']:.1f}",
            "Rep": None if r["rep"] is None else f"{r['rep']:.3f}",
            "checkpoint": r["checkpoint"],
        }
        for r in rows
    ]
    print_table(detail, ["eval", "label", "dataset", "split", "n", "Acc %", "Fmt %", "Len", "Rep", "checkpoint"])
    return 0
