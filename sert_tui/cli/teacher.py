"""``sert-tui teacher``: recorded rationales, the OpenAI Batch API round trip, teacher jobs, the judge.

The online teacher itself runs as a stage: ``sert-tui run CONFIG --stage teacher``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sert_tui.cli.common import open_db, print_json, print_table, stderr


def register(sub: argparse._SubParsersAction) -> None:
    teacher = sub.add_parser("teacher", help="teacher rationales: recorded import, Batch API, jobs, judge")
    t_sub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    imp = t_sub.add_parser("import", help="import recorded teacher rationales")
    imp_sub = imp.add_subparsers(dest="format", metavar="FORMAT", required=True)
    rt = imp_sub.add_parser("reasoning-teacher", help="Fine-tune-CoT format: teacher-<model>/D_<task>.json")
    rt.add_argument("--dataset", required=True, help="dataset of the workspace the file belongs to")
    rt.add_argument("--file", type=Path, required=True, help="D_<task>.json")
    rt.add_argument(
        "--json",
        action="store_true",
        help='print {"dataset", "imported", "rationales", "questions", "questions_correct", "correct", "total", '
        "...}: per split the questions (with a correct rationale) and the rationales (correct)",
    )
    rt.set_defaults(func=cmd_import_recorded)

    exp = t_sub.add_parser("batch-export", help="write a teacher job's open requests as OpenAI Batch API input")
    which = exp.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", type=int, help="teacher job id")
    which.add_argument("--config", type=Path, help="experiment config: find or create its teacher job")
    exp.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    exp.add_argument("--force", action="store_true", help="overwrite an existing file")
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(func=cmd_batch_export)

    bim = t_sub.add_parser("batch-import", help="read OpenAI Batch API output into a teacher job")
    bim.add_argument("--job", type=int, required=True)
    bim.add_argument("--file", type=Path, required=True, help="the batch's output JSONL")
    bim.add_argument("--json", action="store_true")
    bim.set_defaults(func=cmd_batch_import)

    ls = t_sub.add_parser("jobs", help="teacher jobs with answered/failed questions, tokens and cost")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_jobs)

    judge = t_sub.add_parser("judge", help="score an evaluation's reasoning with a judge model")
    judge.add_argument("--eval", type=int, required=True, dest="evaluation", help="evaluation id")
    judge.add_argument("--config", type=Path, help="experiment config whose [judge] section to use")
    judge.add_argument("--base-url", help="overrides judge.base_url")
    judge.add_argument("--model", help="overrides judge.model")
    judge.add_argument("--api", choices=["chat", "completions"], help="overrides judge.api")
    judge.add_argument("--api-key-env", help="overrides judge.api_key_env")
    judge.add_argument("--limit", type=int, help="judge only the first N outputs")
    judge.add_argument("--rejudge", action="store_true", help="score again outputs that have judge scores")
    judge.add_argument("--json", action="store_true")
    judge.set_defaults(func=cmd_judge)


def cmd_import_recorded(args: argparse.Namespace) -> int:
    from engine.teacher.recorded import import_recorded

    result = import_recorded(open_db(args), args.dataset, args.file, echo=stderr)
    if args.json:
        print_json(result)
        return 0
    parts = "; ".join(
        f"{split}: {result['questions_correct'][split]} of {result['questions'][split]} questions with a correct "
        f"rationale, {result['correct'][split]} of {result['total'][split]} rationales correct"
        for split in result["total"]
    )
    print(
        f"job {result['job']}: {result['imported']} questions of {result['dataset']!r}, "
        f"{result['rationales']} rationales ({parts})"
    )
    return 0


def cmd_batch_export(args: argparse.Namespace) -> int:
    from engine.teacher.batch import export_batch, prepare_job

    if args.out.exists() and not args.force:  # refuse before a job is created for --config
        from db.errors import UserError

        raise UserError(f"{args.out}: already exists (use --force to overwrite)")
    engine = open_db(args)
    if args.config is not None:
        from engine.config import load_config

        job_id = prepare_job(engine, load_config(args.config), echo=stderr).id
    else:
        job_id = args.job
    result = export_batch(engine, job_id, args.out, force=args.force)
    if args.json:
        print_json(result)
    else:
        print(
            f"job {result['job']}: wrote {result['requests']} requests for {result['questions']} open questions "
            f"to {result['file']} ({result['cached']} already cached)"
        )
    return 0


def cmd_batch_import(args: argparse.Namespace) -> int:
    from engine.teacher.batch import import_batch

    result = import_batch(open_db(args), args.job, args.file, echo=stderr)
    if args.json:
        print_json(result)
    else:
        print(
            f"job {result['job']}: {result['stored']} replies stored, {result['answered']} questions answered, "
            f"{result['failed']} failed, {result['open']} still open ({result['status']})"
        )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from sqlmodel import select

    from db.models import Dataset, Job
    from db.session import session_scope

    with session_scope(open_db(args)) as s:
        rows = []
        for job in s.exec(select(Job).where(Job.kind == "teacher").order_by(Job.id)).all():
            dataset = s.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
            summary = job.summary or {}
            teacher = (job.config or {}).get("teacher") or {}
            rows.append(
                {
                    "id": job.id,
                    "status": job.status,
                    "dataset": dataset.name if dataset else None,
                    "source": (job.config or {}).get("source", "online"),
                    "model": summary.get("model") or teacher.get("model") or (job.config or {}).get("base_model"),
                    "answered": summary.get("answered"),
                    "failed": summary.get("failed", 0),
                    "rationales": summary.get("rationales"),
                    "correct": summary.get("correct"),
                    "requests": summary.get("requests", 0),
                    "cache_hits": summary.get("cache_hits", 0),
                    "prompt_tokens": summary.get("prompt_tokens", 0),
                    "completion_tokens": summary.get("completion_tokens", 0),
                    "cost_usd": summary.get("cost_usd", 0.0),
                }
            )
    if args.json:
        print_json({"jobs": rows})
        return 0
    print_table(
        rows,
        ["id", "status", "dataset", "source", "model", "answered", "failed", "correct", "requests", "cost_usd"],
    )
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from engine.config import JudgeConfig, load_config
    from engine.teacher.judge import judge_evaluation

    cfg = load_config(args.config).judge if args.config is not None else JudgeConfig()
    overrides = {
        "base_url": args.base_url,
        "model": args.model,
        "api": args.api,
        "api_key_env": args.api_key_env,
        "limit": args.limit,
    }
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    result = judge_evaluation(open_db(args), args.evaluation, cfg, stderr, rejudge=args.rejudge)
    if args.json:
        print_json(result)
    else:
        means = ", ".join(
            f"{c} {result[c]:.2f}" if result[c] is not None else f"{c} -"
            for c in ("coherence", "relevance", "logical_consistency", "completeness")
        )
        print(f"evaluation {result['evaluation']}: {result['scored']} of {result['n']} outputs scored ({means})")
    return 0
