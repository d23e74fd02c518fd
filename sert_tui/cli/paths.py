"""``sert-tui paths``: list the reasoning paths of a job; reject its duplicates."""

from __future__ import annotations

import argparse
import sys

from sert_tui.cli.common import open_db_with_decisions, print_json, print_table

DECISION_CHOICES = ("accepted", "rejected", "ignored", "none")


def register(sub: argparse._SubParsersAction) -> None:
    paths = sub.add_parser("paths", help="reasoning paths of a job")
    paths_sub = paths.add_subparsers(dest="paths_command", metavar="ACTION", required=True)
    ls = paths_sub.add_parser("list", help="list the paths of a sample job (a filter job: its sample job's paths)")
    ls.add_argument("--job", type=int, required=True, help="sample or filter job id")
    ls.add_argument("--decision", choices=DECISION_CHOICES, default=None, help="only paths with this decision")
    ls.add_argument("--selected", action="store_true", help="only paths the rules selected")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    dup = paths_sub.add_parser(
        "reject-duplicates",
        help="reject every undecided duplicate path of a job (same question, same normalised text as an earlier "
        "path: db.duplicates); decisions already made are kept. JSON: {job, paths_job, duplicates, undecided, "
        "decided, rejected: [path ids]}",
    )
    dup.add_argument("--job", type=int, required=True, help="sample or filter job id")
    dup.add_argument("--json", action="store_true")
    dup.set_defaults(func=cmd_reject_duplicates)


def _first_failure(verdicts: dict) -> str | None:
    from engine.filtering.rules import rules_of

    if not verdicts:
        return None
    for rule in rules_of(verdicts):
        if not verdicts[rule].get("pass"):
            return f"{rule}: {verdicts[rule].get('reason', '')}"
    return "passed"


def cmd_list(args: argparse.Namespace) -> int:
    from db.session import session_scope
    from engine.path_views import own_verdicts, path_rows, paths_job

    with session_scope(open_db_with_decisions(args)) as session:
        job = paths_job(session, args.job)
        verdicts = own_verdicts(session, args.job)
        rows = path_rows(session, job.id, args.decision, args.selected, verdicts)
    current = (job.summary or {}).get("filter_job")
    if verdicts is not None and not verdicts and rows:
        print(
            f"note: filter job {args.job} has no verdicts stored (a workspace of an older sert-tui kept only the "
            "newest filter job's); run its config's filter stage again to judge the paths anew",
            file=sys.stderr,
        )
    elif verdicts is not None and current != args.job:
        print(
            f"note: the paths now carry the verdicts of filter job {current}; shown are filter job {args.job}'s own",
            file=sys.stderr,
        )
    if args.json:
        print_json(rows)
        return 0
    table = [
        {
            "id": r["id"],
            "question": r["question_index"],
            "branch": r["branch"],
            "sample": r["sample"],
            "tokens": r["tokens"],
            "rep2": r["rep2"],
            "ppl": r["perplexity"],
            "conf": r["confidence"],
            "agree": r["agreement"],
            "filters": _first_failure(r["verdicts"]),
            "sel": "*" if r["selected"] else "",
            "decision": r["decision"],
            "dup": "" if r["duplicate_of"] is None else f"={r['duplicate_of']}",
            "text": r["text"].strip(),
        }
        for r in rows
    ]
    print_table(
        table,
        [
            "id",
            "question",
            "branch",
            "sample",
            "tokens",
            "rep2",
            "ppl",
            "conf",
            "agree",
            "filters",
            "sel",
            "decision",
            "dup",
            "text",
        ],
    )
    return 0


def cmd_reject_duplicates(args: argparse.Namespace) -> int:
    """The paths screen's bulk reject of duplicates, headless: one transaction, undecided duplicates only."""
    from db.duplicates import reject_undecided
    from db.session import session_scope
    from engine.path_views import paths_job

    with session_scope(open_db_with_decisions(args)) as session:
        job = paths_job(session, args.job)
        found = reject_undecided(session, job.id)
    if args.json:
        print_json({"job": args.job, "paths_job": job.id, **found.as_dict(), "rejected": found.undecided})
        return 0
    of_job = f"job {job.id}" + ("" if job.id == args.job else f" (the sample job of filter job {args.job})")
    print(
        f"rejected {len(found.undecided)} undecided duplicate paths of {of_job}; "
        f"{len(found.of)} duplicates in all, {found.decided} already decided (kept)"
    )
    return 0
