"""``sert-tui study CONFIG --datasets A,B --seeds 0,1,2 [--vary KEY=V1,V2] [--screen]``: the whole comparison over
datasets, seeds and config variants (engine.pipeline.study)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sert_tui.cli.common import open_db, print_json, print_table, stderr


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run --stage all for each dataset, seed and variant (resumable), then compare, clustered by question",
    )
    p.add_argument("config", type=Path, help="experiment TOML (sert-tui config init)")
    p.add_argument("--datasets", required=True, help="datasets of the workspace, comma-separated")
    p.add_argument(
        "--seeds", required=True, help="seeds, comma-separated: each sets sampling.seed, train.seed and filters.seed"
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="config variants, repeatable: the grid of every --vary is crossed with datasets and seeds "
        "(e.g. --vary filters.select=rep2,random,gold_likelihood); jobs a variant does not change are shared",
    )
    p.add_argument(
        "--screen",
        action="store_true",
        help="sample and filter only, and report per variant the share of questions whose selected path is "
        "correct and the share of selected paths that are correct (the cheap first look; trains nothing)",
    )
    shape = '{"cells": [...], "comparisons": [...], "coverage": [...], "runs": [...], "seconds": S}'
    p.add_argument("--json", action="store_true", help=f"print {shape}")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.evaluation.stats import fmt_interval
    from engine.pipeline.study import (
        check_datasets,
        parse_list,
        parse_seeds,
        parse_vary,
        run_study,
        runs_of,
        summarize,
    )

    config = load_config(args.config)
    datasets = parse_list(args.datasets, "datasets")
    seeds = parse_seeds(args.seeds)
    variants = parse_vary(args.vary, config)
    engine = open_db(args)
    check_datasets(engine, datasets)
    started = time.monotonic()
    cells = run_study(engine, config, datasets, seeds, stderr, variants=variants, screen=args.screen)
    result = {
        **summarize(engine, cells, variants),
        "runs": runs_of(cells),
        "seconds": round(time.monotonic() - started, 1),
    }
    complete = all(c.status == "completed" for c in cells)
    if args.json:
        print_json(result)
        return 0 if complete else 1

    what = f"{len(datasets)} dataset(s) x {len(seeds)} seed(s)" + (
        f" x {len(variants)} variant(s)" if len(variants) > 1 else ""
    )
    if result["cells"]:
        print(f"Study: {what}. Accuracy % over questions (each averaged over its seeds), Wilson 95% at n = questions")
        print_table(
            [
                {
                    "dataset": c["dataset"],
                    "variant": c["variant"] or "-",
                    "label": c["label"],
                    "seeds": len(c["seeds"]),
                    "n": c["n"],
                    "acc [95%]": fmt_interval(c["acc"], c["acc_ci"]),
                    "per seed mean ± sd": f"{100 * c['acc_mean']:.1f} ± {100 * c['acc_sd']:.1f}",
                }
                for c in result["cells"]
            ],
            ["dataset", "variant", "label", "seeds", "n", "acc [95%]", "per seed mean ± sd"],
        )
    if result["comparisons"]:
        print()
        print(
            "Clustered by question: d_q = mean over seeds of acc(a) - acc(b); diff = mean d_q over n questions, "
            "95% bootstrap over questions, sign-flip permutation p (exact McNemar with one seed)"
        )
        print_table(
            [
                {
                    "dataset": c["dataset"],
                    "a - b": f"{_side(c['a'], c['variant'])} - {_side(c['b'], c['b_variant'])}",
                    "n": c["n"],
                    "diff (pts)": f"{100 * c['diff']:+.1f}",
                    "95% CI": f"[{100 * c['diff_ci'][0]:+.1f}, {100 * c['diff_ci'][1]:+.1f}]",
                    "p": f"{c['p_value']:.3g}",
                }
                for c in result["comparisons"]
            ],
            ["dataset", "a - b", "n", "diff (pts)", "95% CI", "p"],
        )
    if result["coverage"]:
        print()
        print(
            "Latent reasoning (report coverage), pooled over seeds: % of questions with a correct path among all "
            "25, among the survivors, and selected; and % of selected paths that are correct [Wilson 95%]"
        )
        print_table(
            [
                {
                    "dataset": c["dataset"],
                    "variant": c["variant"] or "-",
                    "questions": c["questions"],
                    "any of 25": _share(c["any_correct"], c["questions"]),
                    "any filtered": _share(c["any_correct_filtered"], c["questions"]),
                    "selected correct (questions)": _share(c["selected_correct"], c["questions"]),
                    "selected paths correct": _share(c["selected_paths_correct"], c["selected_paths"] or 0),
                }
                for c in result["coverage"]
            ],
            [
                "dataset",
                "variant",
                "questions",
                "any of 25",
                "any filtered",
                "selected correct (questions)",
                "selected paths correct",
            ],
        )
    if not complete:
        stderr("study: not every cell completed; run the same command again to resume")
    return 0 if complete else 1


def _side(label: str, variant: str) -> str:
    return f"{label} [{variant}]" if variant else label


def _share(value: float | None, n: int) -> str:
    """A share in percent with its 95% Wilson interval over ``n`` (questions, or selected paths)."""
    from engine.evaluation.stats import fmt_interval, share_interval

    return "-" if value is None else fmt_interval(value, share_interval(value, n))
