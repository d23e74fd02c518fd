"""``sert-tui study CONFIG --datasets A,B --seeds 0,1,2``: the whole comparison over datasets and seeds.

Each (dataset, seed) cell is ``run --stage all`` on a copy of the config with ``data.dataset`` set to the dataset
and both ``sampling.seed`` and ``train.seed`` set to the seed (and ``filters.seed`` where ``filters.select =
"random"``, the control). Every stage of a cell is a job with a fingerprint,
so a study that was killed or cancelled resumes where it stopped: finished jobs are skipped, unfinished ones
resume, nothing is duplicated.

The result pools the seeds (DESIGN.md section 6):

- per dataset and label: the mean accuracy and its sample standard deviation over seeds, and the Wilson
  interval of the pooled counts (every seed's questions together);
- per dataset, the default pairs of ``report compare`` (SERT vs Finetune, SERT vs zero-shot, SERT+RD vs RD,
  RD vs zero-shot), paired on (seed, question): the difference of accuracy, a paired bootstrap interval and the
  exact McNemar p-value on the pooled discordant pairs;
- the majority baseline of each dataset's evaluated questions;
- per dataset, the latent-reasoning coverage of its sample jobs (``report coverage``), pooled over seeds: the
  share of (seed, question) pairs with a correct path among all sampled, among the filter survivors, and with a
  correct selected path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from db.errors import UserError
from db.models import Evaluation, Job
from db.queries import get_dataset
from db.session import session_scope
from db.vocabulary import EVAL, MAJORITY, SAMPLE, TABLE_ORDER
from engine.config import ExperimentConfig
from engine.evaluation.report import DEFAULT_PAIRS, majority_of
from engine.evaluation.stats import mean_sd, paired_compare, wilson_interval

Echo = Callable[[str], None]


@dataclass
class Cell:
    """One (dataset, seed) run of the chain and the evaluations it produced, by label."""

    dataset: str
    seed: int
    status: str = "pending"
    jobs: list[int] = field(default_factory=list)
    evaluations: dict[str, int] = field(default_factory=dict)  # label -> evaluation id
    seconds: float = 0.0


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{what}: give at least one, separated by commas")
    if len(set(items)) != len(items):
        raise UserError(f"--{what}: {text!r} names one twice")
    return items


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for item in parse_list(text, "seeds"):
        try:
            seeds.append(int(item))
        except ValueError:
            raise UserError(f"--seeds: {item!r} is not an integer") from None
    return seeds


def cell_config(config: ExperimentConfig, dataset: str, seed: int) -> ExperimentConfig:
    cfg = config.model_copy(deep=True)
    cfg.data.dataset = dataset
    cfg.sampling.seed = seed
    cfg.train.seed = seed
    if cfg.filters.select == "random":  # the control's pick follows the cell's seed too (other rules read no seed)
        cfg.filters.seed = seed
    return cfg


def check_datasets(database: Engine, datasets: list[str]) -> None:
    """Every dataset is in the workspace, before anything runs."""
    with session_scope(database) as s:
        for name in datasets:
            get_dataset(s, name)


def run_study(
    database: Engine, config: ExperimentConfig, datasets: list[str], seeds: list[int], echo: Echo
) -> list[Cell]:
    """Run (or resume) every cell; a cell whose chain did not complete stops the study (its work is kept)."""
    from engine.pipeline import run_stage

    check_datasets(database, datasets)
    cells = [Cell(d, s) for d in datasets for s in seeds]
    started = time.monotonic()
    for i, cell in enumerate(cells):
        done = i
        elapsed = time.monotonic() - started
        eta = f", ETA {_duration(elapsed / done * (len(cells) - done))}" if done else ""
        echo(f"study: cell {i + 1}/{len(cells)} ({cell.dataset}, seed {cell.seed}), {_duration(elapsed)} so far{eta}")
        t0 = time.monotonic()
        jobs = run_stage(database, cell_config(config, cell.dataset, cell.seed), "all", echo)
        cell.seconds = time.monotonic() - t0
        cell.jobs = [j.id for j in jobs if j.id is not None]
        bad = [j for j in jobs if j.status != "completed"]
        cell.status = bad[0].status if bad else "completed"
        cell.evaluations = evaluations_of(database, [j.id for j in jobs if j.kind == EVAL and j.status == "completed"])
        if bad:
            echo(f"study: stopping at cell {i + 1}/{len(cells)}: job {bad[0].id} {bad[0].kind} {bad[0].status}")
            break
    complete = sum(c.status == "completed" for c in cells)
    echo(f"study: {complete}/{len(cells)} cells complete in {_duration(time.monotonic() - started)}")
    return cells


def evaluations_of(database: Engine, eval_job_ids: list[Any]) -> dict[str, int]:
    if not eval_job_ids:
        return {}
    with database.connect() as conn:
        rows = conn.execute(
            select(Evaluation.label, Evaluation.id)
            .where(Evaluation.job_id.in_(eval_job_ids))  # type: ignore[attr-defined]
            .order_by(Evaluation.id)
        ).all()
    return {label: eid for label, eid in rows}  # the newest of a label wins


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summarize(database: Engine, cells: list[Cell]) -> dict[str, Any]:
    """The study's table as ``{"cells": [...], "comparisons": [...]}`` (module docstring)."""
    from engine.evaluation.report import outcomes

    out_cells: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    with database.connect() as conn:
        for dataset in datasets:
            mine = [c for c in cells if c.dataset == dataset and c.evaluations]
            labels = {lbl for c in mine for lbl in c.evaluations}
            ordered = [lbl for lbl in TABLE_ORDER if lbl in labels] + sorted(labels - set(TABLE_ORDER))
            results: dict[str, dict[tuple[int, int], bool]] = {}
            for label in ordered:
                accs, pooled = [], {}
                seeds = []
                for c in mine:
                    if label not in c.evaluations:
                        continue
                    got = outcomes(conn, c.evaluations[label])
                    if not got:
                        continue
                    seeds.append(c.seed)
                    accs.append(sum(got.values()) / len(got))
                    pooled.update({(c.seed, q): ok for q, ok in got.items()})
                if not pooled:
                    continue
                results[label] = pooled
                m, sd = mean_sd(accs)
                correct = sum(pooled.values())
                out_cells.append(
                    {
                        "dataset": dataset,
                        "label": label,
                        "seeds": seeds,
                        "n": len(pooled),
                        "acc_mean": m,
                        "acc_sd": sd,
                        "acc_ci": list(wilson_interval(correct, len(pooled))),
                    }
                )
            maj = _majority_cell(conn, dataset, mine)
            if maj is not None:
                out_cells.append(maj)
            for a, b in DEFAULT_PAIRS:
                if a in results and b in results:
                    p = paired_compare(results[a], results[b])
                    comparisons.append(
                        {
                            "dataset": dataset,
                            "a": a,
                            "b": b,
                            "n": p.n,
                            "diff": p.diff,
                            "diff_ci": list(p.diff_ci),
                            "p_value": p.p_value,
                            "a_only": p.a_only,
                            "b_only": p.b_only,
                        }
                    )
        coverage_rows = [row for d in datasets if (row := _coverage_row(conn, d, cells)) is not None]
    return {"cells": out_cells, "comparisons": comparisons, "coverage": coverage_rows}


def _coverage_row(conn: Any, dataset: str, cells: list[Cell]) -> dict[str, Any] | None:
    """The coverage shares of the dataset's sample jobs, pooled over seeds (weighted by questions)."""
    from engine.filtering.coverage import coverage

    mine = [c for c in cells if c.dataset == dataset and c.jobs]
    if not mine:
        return None
    kinds = dict(conn.execute(select(Job.id, Job.kind).where(Job.id.in_([j for c in mine for j in c.jobs]))).all())  # type: ignore[union-attr]
    seeds, parts = [], []
    for c in mine:
        sample = next((j for j in c.jobs if kinds.get(j) == SAMPLE), None)
        if sample is not None:
            seeds.append(c.seed)
            parts.append(coverage(conn, sample))
    questions = sum(p["questions"] for p in parts)
    if not questions:
        return None
    row: dict[str, Any] = {"dataset": dataset, "seeds": seeds, "questions": questions}
    for key in ("any_correct", "any_correct_filtered", "selected_correct"):
        known = [p for p in parts if p[key] is not None]
        n = sum(p["questions"] for p in known)
        row[key] = sum(p[key] * p["questions"] for p in known) / n if n else None
    return row


def _majority_cell(conn: Any, dataset: str, cells: list[Cell]) -> dict[str, Any] | None:
    eval_ids = [eid for c in cells for eid in c.evaluations.values()]
    if not eval_ids:
        return None
    _answer, count, n = majority_of(conn, eval_ids)
    if not n:
        return None
    return {
        "dataset": dataset,
        "label": MAJORITY,
        "seeds": sorted({c.seed for c in cells}),
        "n": n,
        "acc_mean": count / n,
        "acc_sd": 0.0,
        "acc_ci": list(wilson_interval(count, n)),
    }


def runs_of(cells: list[Cell]) -> list[dict[str, Any]]:
    """What each cell ran, for the JSON and for a person checking a resume."""
    return [
        {
            "dataset": c.dataset,
            "seed": c.seed,
            "status": c.status,
            "seconds": round(c.seconds, 1),
            "jobs": c.jobs,
            "evaluations": c.evaluations,
        }
        for c in cells
    ]
