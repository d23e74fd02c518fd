"""Benchmark of the whole SERT loop: ``run --stage all`` timed stage by stage, in one run.

A fresh workspace in a temporary directory; StrategyQA of ../shared/data imported as ``sqa`` with its recorded
text-davinci-002 rationales (the teacher stage reads them, no API); the config is the defaults with
``data.train_limit`` 160, ``data.test_limit`` 200 and ``train.epochs`` 3 (``--train-limit``, ``--test-limit``,
``--epochs``). ``run_stage(..., "all")`` runs sample -> filter -> self-train, the teacher (recorded), distill
(RD and SERT+RD), Finetune and the five evaluations; each stage's seconds are its jobs' ``finished_at -
started_at`` summed per kind, and the total is the wall time of the whole call (job bookkeeping included).

``--root DIR`` runs another checkout of sert-tui (e.g. an older commit in a ``git worktree``) with this same
script, for a before/after comparison on one machine: the script only uses ``open_workspace``,
``import_task_with_rationales``, ``config_from_dict`` and ``run_stage``.

    .venv/bin/python benchmarks/pipeline.py [--train-limit 160] [--test-limit 200] [--epochs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-limit", type=int, default=160)
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument(
        "--tokens", type=int, help="sampling.max_new_tokens and eval.max_new_tokens (default: the config's, 128)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="another config value (a TOML literal), e.g. filters.min_tokens=1 (for a tiny run)",
    )
    parser.add_argument("--root", help="the sert-tui checkout to run (default: this one)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve() if args.root else ROOT
    sys.path.insert(0, str(root))

    from sqlmodel import select
    from transformers.utils import logging as hf_logging

    from db.models import Job
    from db.session import open_workspace, session_scope
    from engine.config import config_from_dict, toml_value
    from engine.pipeline import run_stage
    from engine.teacher.recorded import import_task_with_rationales

    hf_logging.disable_progress_bar()
    tmp = tempfile.TemporaryDirectory(prefix="sert-pipeline-bench-")
    database = open_workspace(Path(tmp.name) / "workspace.db")
    import_task_with_rationales(database, "sqa", DATA, "strategy_qa")
    settings = {
        "name": "pipeline-benchmark",
        "data": {"dataset": "sqa", "train_limit": args.train_limit, "test_limit": args.test_limit},
        "train": {"epochs": args.epochs},
    }
    if args.tokens:
        settings["sampling"] = {"max_new_tokens": args.tokens}
        settings["eval"] = {"max_new_tokens": args.tokens}
    for item in args.set:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        settings.setdefault(section, {})[name] = toml_value(raw)
    config = config_from_dict(settings)
    log(f"run --stage all on {root}: {json.dumps(settings)}")
    started = time.perf_counter()
    jobs = run_stage(database, config, "all", lambda line: log(f"  {line}"))
    total = time.perf_counter() - started
    with session_scope(database) as s:
        rows = s.exec(select(Job).order_by(Job.id)).all()  # type: ignore[arg-type]
        per_job = [
            {
                "id": j.id,
                "kind": j.kind,
                "label": j.label,
                "status": j.status,
                "seconds": (j.finished_at - j.started_at).total_seconds() if j.started_at and j.finished_at else None,
            }
            for j in rows
        ]
    stages: dict[str, float] = {}
    for j in per_job:
        stages[j["kind"]] = stages.get(j["kind"], 0.0) + (j["seconds"] or 0.0)
    failed = [j for j in per_job if j["status"] != "completed"]
    import torch

    summary = {
        "root": str(root),
        "config": settings,
        "total_seconds": total,
        "stage_seconds": stages,
        "jobs": per_job,
        "all_completed": not failed and all(j.status == "completed" for j in jobs),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if summary["all_completed"] else 1
    print(f"run --stage all ({root}): {total / 60:.1f} min in all")
    for kind, seconds in stages.items():
        print(f"  {kind:<12} {seconds:7.1f} s")
    for j in per_job:
        print(
            f"    job {j['id']:>3} {j['kind']:<11} {j['label'] or '':<10} {j['status']:<10} {j['seconds'] or 0:7.1f} s"
        )
    return 0 if summary["all_completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
