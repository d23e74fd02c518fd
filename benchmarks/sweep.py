"""Sweep of the training recipe for the bundled student on a CPU: epochs x learning rate, full and LoRA.

Each cell trains RD (the student distilled from the base model on the recorded text-davinci-002 rationales of
../shared/data) with one (mode, lr, epochs) and evaluates it greedily on the test questions. RD is swept
because its training set is fixed: the paths SERT trains on depend on sampling, so their noise would hide the
recipe's. The other trainings of ``run --stage all`` (SERT, SERT+RD, Finetune) take the same ``[train]``
section, and ``sert-tui config init --preset cpu`` writes what this sweep found (``engine.config.PRESETS``).

The workspace is a file (``--db``): every cell is a training and an evaluation job with a fingerprint, so a
killed sweep resumes where it stopped, and a study on the same workspace reuses the cells it shares with it.
Missing datasets are imported from ../shared/data with their recorded rationales. Every accuracy is printed
with its 95% Wilson interval and n; the cells of one dataset are on the same questions.

    .venv/bin/python benchmarks/sweep.py --db runs/sweep.db --datasets strategy_qa,coin_flip \\
        [--train-limit 48] [--test-limit 100] [--epochs 1,3] [--lr-full 3e-5,1e-4,3e-4] \\
        [--lr-lora 3e-4,1e-3,3e-3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def grid(lr_full: list[float], lr_lora: list[float], epochs: list[float]) -> list[dict[str, Any]]:
    """The cells of one dataset, full fine-tuning first: ``{"lora", "lr", "epochs"}``."""
    cells = [{"lora": False, "lr": lr, "epochs": e} for lr in lr_full for e in epochs]
    return cells + [{"lora": True, "lr": lr, "epochs": e} for lr in lr_lora for e in epochs]


def ensure_dataset(database: Any, name: str) -> None:
    """Import a Fine-tune-CoT task of ../shared/data under its own name, with its recorded rationales."""
    from engine.teacher.recorded import import_task_with_rationales

    if import_task_with_rationales(database, name, DATA):
        log(f"imported {name} with its recorded rationales")


def run_cell(database: Any, dataset: str, cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from sqlmodel import select

    from db.models import Evaluation
    from db.session import session_scope
    from engine.config import config_from_dict
    from engine.evaluation.stage import evaluate, job_target
    from engine.evaluation.stats import wilson_interval
    from engine.jobs import config_dataset
    from engine.training.stage import distill_plan, run_plan

    config = config_from_dict(
        {
            "name": "sweep",
            "data": {"dataset": dataset, "train_limit": args.train_limit, "test_limit": args.test_limit},
            "train": {"lora": cell["lora"], "lr": cell["lr"], "epochs": cell["epochs"], "distill_from": "base"},
        }
    )
    echo = lambda line: log(f"  {line}")  # noqa: E731
    ds = config_dataset(database, config)
    started = time.perf_counter()
    train_job = run_plan(database, config, ds, distill_plan(database, config, ds), echo)
    train_s = time.perf_counter() - started
    row: dict[str, Any] = {"dataset": dataset, **cell, "train_job": train_job.id, "train_seconds": train_s}
    if train_job.status != "completed":
        return {**row, "status": train_job.status}
    eval_job = evaluate(database, config, ds, job_target(database, train_job), echo)
    with session_scope(database) as s:
        ev = s.exec(select(Evaluation).where(Evaluation.job_id == eval_job.id)).first()  # type: ignore[arg-type]
        n, acc, fmt = (ev.n, ev.acc or 0.0, ev.fmt or 0.0) if ev is not None else (0, 0.0, 0.0)
    correct = round(acc * n)
    return {
        **row,
        "status": eval_job.status,
        "eval_job": eval_job.id,
        "n": n,
        "acc": acc,
        "acc_ci": list(wilson_interval(correct, n)),
        "fmt": fmt,
        "loss": (train_job.summary or {}).get("final_loss"),
        "seconds": time.perf_counter() - started,
    }


def best_of(rows: list[dict[str, Any]], lora: bool) -> dict[str, Any] | None:
    """The cell of a mode with the highest mean accuracy over the datasets (ties: fewer epochs, lower lr)."""
    by_recipe: dict[tuple[float, float], list[float]] = {}
    for r in rows:
        if r["lora"] == lora and "acc" in r:
            by_recipe.setdefault((r["epochs"], r["lr"]), []).append(r["acc"])
    if not by_recipe:
        return None
    (epochs, lr), accs = max(by_recipe.items(), key=lambda kv: (sum(kv[1]) / len(kv[1]), -kv[0][0], -kv[0][1]))
    return {"lora": lora, "epochs": epochs, "lr": lr, "mean_acc": sum(accs) / len(accs), "datasets": len(accs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="workspace file (created if missing; resumable)")
    parser.add_argument("--datasets", default="strategy_qa,coin_flip", help="task names of ../shared/data")
    parser.add_argument("--train-limit", type=int, default=48)
    parser.add_argument("--test-limit", type=int, default=100)
    parser.add_argument("--epochs", default="1,3")
    parser.add_argument("--lr-full", default="3e-5,1e-4,3e-4")
    parser.add_argument("--lr-lora", default="3e-4,1e-3,3e-3")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from db.session import open_workspace

    hf_logging.disable_progress_bar()
    database = open_workspace(Path(args.db))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in datasets:
        ensure_dataset(database, name)
    cells = grid(floats(args.lr_full), floats(args.lr_lora), floats(args.epochs))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    total = len(cells) * len(datasets)
    for dataset in datasets:
        for cell in cells:
            done = len(rows)
            elapsed = time.perf_counter() - started
            eta = f", ETA {elapsed / done * (total - done) / 60:.0f} min" if done else ""
            log(f"sweep: cell {done + 1}/{total} {dataset} {cell}, {elapsed / 60:.1f} min so far{eta}")
            rows.append(run_cell(database, dataset, cell, args))
            r = rows[-1]
            if "acc" in r:
                lo, hi = r["acc_ci"]
                log(f"sweep: {dataset} {cell}: acc {r['acc']:.1%} [{lo:.1%}, {hi:.1%}] n={r['n']}")
    summary = {
        "config": {"train_limit": args.train_limit, "test_limit": args.test_limit, "stage": "distill (RD)"},
        "rows": rows,
        "best_full": best_of(rows, lora=False),
        "best_lora": best_of(rows, lora=True),
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"sweep of RD training: train_limit {args.train_limit}, test_limit {args.test_limit}")
    print(f"{'dataset':<26} {'mode':<5} {'lr':>7} {'ep':>3} {'acc':>6} {'95% CI':>15} {'fmt':>6} {'s':>6}")
    for r in rows:
        head = f"{r['dataset']:<26} {'lora' if r['lora'] else 'full':<5} {r['lr']:>7g} {r['epochs']:>3g}"
        if "acc" not in r:
            print(f"{head} {r['status']}")
            continue
        ci = f"[{r['acc_ci'][0]:.1%}, {r['acc_ci'][1]:.1%}]"
        print(f"{head} {r['acc']:>6.1%} {ci:>15} {r['fmt']:>6.1%} {r['seconds']:>6.0f}")
    for key in ("best_full", "best_lora"):
        print(f"{key}: {summary[key]}")
    print(f"total {summary['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
