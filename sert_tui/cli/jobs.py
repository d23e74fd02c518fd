"""``sert-tui jobs``: list jobs, show one, cancel one."""

from __future__ import annotations

import argparse

from sert_tui.cli.common import open_db, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="jobs in the workspace")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    ls = jobs_sub.add_parser("list", help="list jobs")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    cancel = jobs_sub.add_parser("cancel", help="ask a running job to stop (its finished work is kept)")
    cancel.add_argument("job", type=int)
    cancel.set_defaults(func=cmd_cancel)


def job_row(job) -> dict:
    return {"id": job.id, "kind": job.kind, "status": job.status}


def cmd_list(args: argparse.Namespace) -> int:
    from db.queries import list_jobs
    from db.session import session_scope

    with session_scope(open_db(args)) as session:
        jobs = list_jobs(session)
    if args.json:
        print_json({"jobs": [job_row(j) for j in jobs]})
        return 0
    rows = [
        {
            **job_row(j),
            "label": j.label,
            "progress": f"{j.progress_done}/{j.progress_total}",
            "started": j.started_at.strftime("%Y-%m-%d %H:%M") if j.started_at else None,
            "message": j.error or j.message,
        }
        for j in jobs
    ]
    print_table(rows, ["id", "kind", "status", "label", "progress", "started", "message"])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine.jobs import request_cancel

    request_cancel(open_db(args), args.job)
    print(f"asked job {args.job} to stop")
    return 0
