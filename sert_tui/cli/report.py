"""``sert-tui report``: summaries of finished work. One function pair (register + command) per report."""

from __future__ import annotations

import argparse
from typing import Any

from sert_tui.cli.common import open_db, print_json, print_table, stderr


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="reports on jobs (filters, ...)")
    report_sub = report.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    register_filters(report_sub)
    register_runs(report_sub)
    register_coverage(report_sub)


# -- report filters ---------------------------------------------------------------------------------------
def register_filters(report_sub: argparse._SubParsersAction) -> None:
    p = report_sub.add_parser("filters", help="paths each filter removed, in the order applied (paper Fig. 4)")
    p.add_argument("--job", type=int, required=True, help="filter job id (or a sample job: its current verdicts)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="filters.KEY=VALUE",
        help="what if: the counts these settings would give on the job's paths (writes nothing); repeatable",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"job","questions","paths","removed","selected","rules","selection"}; per rule and for the '
        "selection: removed_correct, removed_incorrect, correct_share_removed, correct_share_kept",
    )
    p.set_defaults(func=cmd_filters)


def filters_report(session: Any, job_id: int) -> dict[str, Any]:
    """Counts of a filter job (from its summary) or of a sample job (from its paths' current verdicts).

    Keys: job, sample_job, rules, questions, paths, removed (by the first rule that dropped a path),
    failed (each rule on its own), selected; ``steps`` and ``selection``: what each rule and the selection throw
    away (correct vs incorrect, :func:`engine.filtering.explore.removal_step`), recounted from the stored paths
    under the job's own settings (the rules are pure functions of them, so the counts are the job's).
    """
    from sqlmodel import select

    from db.errors import UserError
    from db.models import Job, Path
    from engine.filtering import rules as filters

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
    from engine.filtering.explore import load_job_paths

    recount = load_job_paths(session, job_id, current=True).counts()
    steps = {"steps": recount["rules"], "selection": recount["selection"]}
    return {"job": job_id, "sample_job": sample_job, **counts, **steps}


#: What each rule throws away, as the text report's columns: (column, key of a step).
REMOVAL_COLUMNS = (
    ("correct removed", "removed_correct"),
    ("incorrect removed", "removed_incorrect"),
    ("correct % removed", "correct_share_removed"),
    ("correct % kept", "correct_share_kept"),
)


def _removal_cells(step: dict[str, Any] | None) -> dict[str, Any]:
    if step is None:
        return {}
    out: dict[str, Any] = {}
    for column, key in REMOVAL_COLUMNS:
        value = step.get(key)
        out[column] = f"{100 * value:.1f}%" if key.startswith("correct_share") and value is not None else value
    return out


def cmd_filters(args: argparse.Namespace) -> int:
    from db.session import session_scope

    if args.set:
        return cmd_filters_what_if(args)
    with session_scope(open_db(args)) as session:
        report = filters_report(session, args.job)
    if args.json:
        keys = ("job", "questions", "paths", "removed", "selected")
        print_json({**{k: report[k] for k in keys}, "rules": report["steps"], "selection": report["selection"]})
        return 0
    print(
        f"filters of job {report['job']} (paths of sample job {report['sample_job']}): "
        f"{report['questions']} questions, {report['paths']} paths"
    )
    left = report["paths"]
    rows = []
    steps = {s["rule"]: s for s in report["steps"]}
    for rule, removed in report["removed"].items():
        left -= removed
        rows.append(
            {
                "rule": rule,
                "removed": removed,
                "left": left,
                "fails alone": report["failed"].get(rule),
                **_removal_cells(steps.get(rule)),
            }
        )
    rows.append(
        {
            "rule": f"selection ({report['selection']['select']})",
            "removed": left - report["selected"],
            "left": report["selected"],
            **_removal_cells(report["selection"]),
        }
    )
    print_table(rows, ["rule", "removed", "left", "fails alone", *(c for c, _k in REMOVAL_COLUMNS)])
    print(_legend())
    return 0


def _legend() -> str:
    from engine.filtering.explore import SAME_RATE

    return f"{SAME_RATE[0].upper()}{SAME_RATE[1:]}."


def cmd_filters_what_if(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from engine.filtering.explore import parse_sets, what_if

    overrides = parse_sets(args.set)
    with Session(open_db(args)) as session:  # read only: nothing is committed
        result = what_if(session, args.job, overrides)
        session.rollback()
    if args.json:
        print_json(result)
        return 0
    changed = ", ".join(f"{k} = {v}" for k, v in overrides.items())
    print(
        f"what if {changed} on the paths of sample job {result['sample_job']}: "
        f"{result['questions']} questions, {result['paths']} paths ({result['correct']} correct); nothing written"
    )
    print_table(
        [
            {
                "rule": s["rule"],
                "removes": s["removed"],
                "paths left": s["paths_left"],
                "questions left": s["questions_left"],
                "correct left": s["correct_left"],
                **_removal_cells(s),
            }
            for s in result["rules"]
        ]
        + [
            {
                "rule": f"selection ({result['selection']['select']})",
                "removes": result["survivors"] - result["selected"],
                "paths left": result["selected"],
                "questions left": result["selected"],
                "correct left": result["selected_correct"],
                **_removal_cells(result["selection"]),
            }
        ],
        ["rule", "removes", "paths left", "questions left", "correct left", *(c for c, _k in REMOVAL_COLUMNS)],
    )
    print(_legend())
    return 0


# -- report runs ------------------------------------------------------------------------------------------
def register_runs(report_sub: argparse._SubParsersAction) -> None:
    p = report_sub.add_parser("runs", help="evaluated models side by side, laid out like the paper's Table II")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a list of {label, checkpoint, dataset, split, n, acc, acc_ci, fmt, fmt_ci, len, rep}; "
        'a row labelled "majority" per dataset/split; evaluations of completed eval jobs only (notes on newer '
        "unfinished ones go to stderr)",
    )
    p.set_defaults(func=cmd_runs)
    c = report_sub.add_parser(
        "compare",
        help="two labels on the questions both answered: difference, bootstrap interval over questions, "
        "sign-flip permutation test on d_q (exact McNemar with one seed)",
    )
    c.add_argument("--a", default=None, help="label a (with --b); default: SERT vs Finetune, SERT vs zero-shot, ...")
    c.add_argument("--b", default=None, help="label b; the difference is acc(a) - acc(b)")
    c.add_argument(
        "--json",
        action="store_true",
        help="print [{dataset, split, a, b, n, diff, diff_ci, p_value}] (notes on unfinished evaluations: stderr)",
    )
    c.set_defaults(func=cmd_compare)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def print_notes(notes: list[Any], json_output: bool) -> None:
    """Notes on unfinished evaluations newer than the ones shown: on stdout with a table, on stderr with --json
    (stdout keeps its one JSON document)."""
    for note in notes:
        line = f"note: {note.text()}"
        if json_output:
            stderr(line)
        else:
            print(line)


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.evaluation.report import run_rows, table_two, unfinished_notes
    from engine.evaluation.stats import fmt_interval

    engine = open_db(args)
    with engine.connect() as conn:
        rows = run_rows(conn)
        notes = unfinished_notes(conn)
    if args.json:
        print_json([r.as_json() for r in rows])
        print_notes(notes, json_output=True)
        return 0
    if not rows:
        print("no evaluations yet (of completed eval jobs): run a config with --stage eval (or --stage all)")
        print_notes(notes, json_output=False)
        return 0
    labels, lines = table_two(rows)
    print(
        "Accuracy % [95% Wilson interval], newest evaluation per label of a completed eval job (paper Table II layout)"
    )
    print_table(
        [
            {
                "student": line.student,
                "dataset": line.dataset,
                "split": line.split,
                **{lbl: fmt_interval(c.acc, c.acc_ci) if (c := line.cells.get(lbl)) else None for lbl in labels},
            }
            for line in lines
        ],
        ["student", "dataset", "split", *labels],
    )
    print("majority: always answering the most common gold answer of the questions evaluated")
    print()
    print("All evaluations")
    detail = [
        {
            "eval": r.id or None,
            "label": r.label if r.answer is None else f"{r.label} ({r.answer!r})",
            "dataset": r.dataset,
            "split": r.split,
            "n": r.n,
            "Acc % [95%]": fmt_interval(r.acc, r.acc_ci),
            "Fmt % [95%]": fmt_interval(r.fmt, r.fmt_ci),
            "Len": None if r.len is None else f"{r.len:.1f}",
            "Rep": None if r.rep is None else f"{r.rep:.3f}",
            "checkpoint": r.checkpoint,
        }
        for r in rows
    ]
    print_table(
        detail, ["eval", "label", "dataset", "split", "n", "Acc % [95%]", "Fmt % [95%]", "Len", "Rep", "checkpoint"]
    )
    print_notes(notes, json_output=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from db.errors import UserError
    from engine.evaluation.report import COMPARE_TEST, DEFAULT_PAIRS, all_evaluations, compare, unfinished

    if (args.a is None) != (args.b is None):
        raise UserError("report compare: give both --a and --b, or neither")
    engine = open_db(args)
    with engine.connect() as conn:
        rows, notes = unfinished(all_evaluations(conn))
        known = {r.label for r in rows}
        for flag, label in (("--a", args.a), ("--b", args.b)):
            if label is not None and label not in known:
                raise UserError(
                    f"{flag} {label!r}: no evaluation of a completed eval job has that label "
                    f"(labels: {', '.join(sorted(known))})"
                )
        pairs = [(args.a, args.b)] if args.a is not None else None
        result = compare(conn, pairs, rows)
    notes = [n for n in notes if any(n.label in pair for pair in pairs or DEFAULT_PAIRS)]
    if args.json:
        print_json([c.as_json() for c in result])
        print_notes(notes, json_output=True)
        return 0
    if not result:
        print("nothing to compare: no Table II line has both labels evaluated by a completed eval job")
        print_notes(notes, json_output=False)
        return 0
    print(
        "Paired on the questions both answered: diff = acc(a) - acc(b) (the mean of d_q), 95% bootstrap over "
        f"questions, p: {COMPARE_TEST}"
    )
    print_table(
        [
            {
                "student": c.student,
                "dataset": c.dataset,
                "split": c.split,
                "a - b": f"{c.a} - {c.b}",
                "n": c.paired.n,
                "diff (pts)": f"{100 * c.paired.diff:+.1f}",
                "95% CI": f"[{100 * c.paired.diff_ci[0]:+.1f}, {100 * c.paired.diff_ci[1]:+.1f}]",
                "a only / b only": f"{c.paired.a_only} / {c.paired.b_only}",
                "p": f"{c.paired.p_value:.3g}",
            }
            for c in result
        ],
        ["student", "dataset", "split", "a - b", "n", "diff (pts)", "95% CI", "a only / b only", "p"],
    )
    print_notes(notes, json_output=False)
    return 0


# -- report coverage --------------------------------------------------------------------------------------
def register_coverage(report_sub: argparse._SubParsersAction) -> None:
    p = report_sub.add_parser(
        "coverage", help="latent reasoning: questions with a correct path among all sampled / filtered / selected"
    )
    p.add_argument("--job", type=int, required=True, help="sample job id (or a filter job: its sample job)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"questions", "any_correct", "any_correct_filtered", "selected_correct", "selected_paths", '
        '"selected_paths_correct", "zero_shot_acc"}',
    )
    p.set_defaults(func=cmd_coverage)


def cmd_coverage(args: argparse.Namespace) -> int:
    from db.errors import UserError
    from engine.filtering.coverage import coverage

    with open_db(args).connect() as conn:
        try:
            result = coverage(conn, args.job)
        except (LookupError, ValueError) as exc:
            raise UserError(str(exc)) from None
    if args.json:
        print_json(result)
        return 0

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    print(f"latent reasoning of sample job {result['sample_job']}: {result['questions']} questions")
    print(f"  a correct path among all sampled paths   {share(result['any_correct'])}")
    print(f"  a correct path among the filtered paths  {share(result['any_correct_filtered'])}")
    print(f"  the selected path is correct             {share(result['selected_correct'])}")
    if result["selected_paths"]:
        print(
            f"  selected paths that are correct          {share(result['selected_paths_correct'])}"
            f" of {result['selected_paths']}"
        )
    print(f"  greedy zero-shot accuracy (evaluation)   {share(result['zero_shot_acc'])}")
    return 0
