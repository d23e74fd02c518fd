"""``sert-tui study CONFIG --datasets A,B --seeds 0,1,2``: the whole comparison over datasets and seeds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sert_tui.cli.common import open_db, print_json, print_table, stderr


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run --stage all for each dataset and seed (resumable), then pool: mean ± sd, intervals, paired tests",
    )
    p.add_argument("config", type=Path, help="experiment TOML (sert-tui config init)")
    p.add_argument("--datasets", required=True, help="datasets of the workspace, comma-separated")
    p.add_argument("--seeds", required=True, help="seeds, comma-separated: each sets sampling.seed and train.seed")
    shape = '{"cells": [...], "comparisons": [...], "coverage": [...], "runs": [...]}'
    p.add_argument("--json", action="store_true", help=f"print {shape}")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.pipeline.study import check_datasets, parse_list, parse_seeds, run_study, runs_of, summarize

    config = load_config(args.config)
    datasets = parse_list(args.datasets, "datasets")
    seeds = parse_seeds(args.seeds)
    engine = open_db(args)
    check_datasets(engine, datasets)
    started = time.monotonic()
    cells = run_study(engine, config, datasets, seeds, stderr)
    result = {**summarize(engine, cells), "runs": runs_of(cells), "seconds": round(time.monotonic() - started, 1)}
    complete = all(c.status == "completed" for c in cells)
    if args.json:
        print_json(result)
        return 0 if complete else 1

    print(f"Study: {len(datasets)} dataset(s) x {len(seeds)} seed(s), accuracy % over seeds")
    print_table(
        [
            {
                "dataset": c["dataset"],
                "label": c["label"],
                "seeds": len(c["seeds"]),
                "n": c["n"],
                "mean ± sd": f"{100 * c['acc_mean']:.1f} ± {100 * c['acc_sd']:.1f}",
                "pooled [95%]": f"[{100 * c['acc_ci'][0]:.1f}, {100 * c['acc_ci'][1]:.1f}]",
            }
            for c in result["cells"]
        ],
        ["dataset", "label", "seeds", "n", "mean ± sd", "pooled [95%]"],
    )
    print()
    print("Paired over (seed, question): diff = acc(a) - acc(b), 95% paired bootstrap, exact McNemar")
    print_table(
        [
            {
                "dataset": c["dataset"],
                "a - b": f"{c['a']} - {c['b']}",
                "n": c["n"],
                "diff (pts)": f"{100 * c['diff']:+.1f}",
                "95% CI": f"[{100 * c['diff_ci'][0]:+.1f}, {100 * c['diff_ci'][1]:+.1f}]",
                "p (McNemar)": f"{c['p_value']:.3g}",
            }
            for c in result["comparisons"]
        ],
        ["dataset", "a - b", "n", "diff (pts)", "95% CI", "p (McNemar)"],
    )
    if result["coverage"]:
        print()
        print("Latent reasoning (report coverage), pooled over seeds: % of questions with a correct path")
        print_table(
            [
                {
                    "dataset": c["dataset"],
                    "questions": c["questions"],
                    "any of 25": _share(c["any_correct"]),
                    "any filtered": _share(c["any_correct_filtered"]),
                    "selected": _share(c["selected_correct"]),
                }
                for c in result["coverage"]
            ],
            ["dataset", "questions", "any of 25", "any filtered", "selected"],
        )
    if not complete:
        stderr("study: not every cell completed; run the same command again to resume")
    return 0 if complete else 1


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
