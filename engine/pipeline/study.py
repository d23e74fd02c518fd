"""``sert-tui study CONFIG --datasets A,B --seeds 0,1,2 [--vary KEY=V1,V2 ...]``: the whole comparison over
datasets, seeds and config variants.

Each (dataset, seed, variant) cell is ``run --stage all`` on a copy of the config with ``data.dataset`` set to the
dataset, ``sampling.seed`` and ``train.seed`` set to the seed (and ``filters.seed`` where ``filters.select = "random"``,
the control), and the variant's keys set. The
variants are the grid of the ``--vary`` options (``--vary filters.select=rep2,random`` gives two), each labelled by
the keys it sets (``select=random``). Every stage of a cell is a job with a fingerprint, so

- jobs that a variant does not change are shared, not repeated: when only ``filters.*`` varies, each
  (dataset, seed) has one sample job, and Finetune, RD and zero-shot one job (and one evaluation) each;
- a study that was killed or cancelled resumes where it stopped: finished jobs are skipped, unfinished ones
  resume, nothing is duplicated.

The result (DESIGN.md section 6), the unit of evidence being the question:

- per dataset, variant and label: the mean accuracy over seeds and its sample standard deviation, and the
  accuracy over questions (each question's outcomes averaged over the label's distinct evaluations: a
  deterministic evaluation shared by the seeds, such as zero-shot, counts once) with a Wilson interval at
  n = questions. A label whose evaluations are the same in every variant (the shared baselines) is one row
  with variant ``""``;
- comparisons clustered by question (``engine.evaluation.stats.clustered_compare``): d_q = mean over seeds of
  acc(a) - acc(b), the mean of d_q, a bootstrap interval over questions and a sign-flip permutation p-value
  (exact McNemar with one seed). Per variant: the default pairs of ``report compare``, and SERT and SERT+RD
  against the same variant with ``filters.select`` set to ``rep2`` (the paper's rule) and to ``random`` (the
  control), where the grid has them;
- the majority baseline of each dataset's evaluated questions;
- per dataset and variant, the latent-reasoning coverage of its filter jobs (``report coverage``), pooled over
  seeds: the share of questions with a correct path among all sampled, among the filter survivors, with a
  correct selected path, and the share of selected paths that are correct.

``--screen`` runs only sample and filter per cell and reports the coverage: the cheap first look at which
selection picks correct paths, before anything trains.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from db.errors import UserError
from db.models import Evaluation, Job
from db.queries import get_dataset
from db.session import session_scope
from db.vocabulary import EVAL, FILTER, MAJORITY, SAMPLE, SERT, SERT_RD, TABLE_ORDER
from engine.config import ExperimentConfig, config_from_dict
from engine.evaluation.report import DEFAULT_PAIRS, majority_of
from engine.evaluation.stats import clustered_compare, mean_sd, wilson_interval

Echo = Callable[[str], None]
#: The selection key and the two references every variant's SERT and SERT+RD are compared with.
SELECT_KEY = "filters.select"
REFERENCE_RULES = ("rep2", "random")
#: Labels whose model a variant of ``filters.*`` trains anew (the others are shared baselines).
VARIANT_LABELS = (SERT, SERT_RD)


@dataclass(frozen=True)
class Variant:
    """One point of the ``--vary`` grid: dotted config keys and their values, and its label."""

    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return " ".join(f"{key.rsplit('.', 1)[-1]}={_show(value)}" for key, value in self.settings)

    def get(self, key: str) -> Any:
        return dict(self.settings).get(key)

    def replaced(self, key: str, value: Any) -> Variant:
        return Variant(tuple((k, value if k == key else v) for k, v in self.settings))


@dataclass
class Cell:
    """One (dataset, seed, variant) run of the chain and the evaluations it produced, by label."""

    dataset: str
    seed: int
    status: str = "pending"
    jobs: list[int] = field(default_factory=list)
    evaluations: dict[str, int] = field(default_factory=dict)  # label -> evaluation id
    seconds: float = 0.0
    variant: str = ""
    filter_job: int | None = None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


def _toml_literal(raw: str) -> Any:
    """A TOML literal (``3``, ``0.2``, ``true``, ``"x"``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_vary(items: Sequence[str], config: ExperimentConfig) -> list[Variant]:
    """The grid of ``--vary SECTION.KEY=V1,V2,...`` options (each repeatable key once), every variant's config
    validated before anything runs: an unknown key or a bad value is a UserError (exit 2)."""
    axes: list[tuple[str, list[Any]]] = []
    dumped = config.model_dump(mode="json")
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise UserError(f"--vary {item!r}: expected SECTION.KEY=V1,V2 (e.g. filters.select=rep2,random)")
        if section not in dumped or not isinstance(dumped[section], dict) or name not in dumped[section]:
            known = (
                ", ".join(f"{section}.{k}" for k in dumped.get(section, {}))
                if isinstance(dumped.get(section), dict)
                else ", ".join(k for k, v in dumped.items() if isinstance(v, dict))
            )
            raise UserError(f"--vary {key}: no such config key (known: {known})")
        if key in ("data.dataset", "sampling.seed", "train.seed", "filters.seed"):
            raise UserError(f"--vary {key}: the study sets it per cell (--datasets, --seeds)")
        if any(k == key for k, _ in axes):
            raise UserError(f"--vary {key}: given twice; list its values once, comma-separated")
        values = [_toml_literal(v) for v in parse_list(raw, f"vary {key}")]
        axes.append((key, values))
    variants = [
        Variant(tuple(zip([k for k, _ in axes], combo, strict=True)))
        for combo in itertools.product(*[vals for _, vals in axes])
    ] or [Variant()]
    for variant in variants:
        variant_config(config, variant)  # validates
    return variants


def variant_config(config: ExperimentConfig, variant: Variant) -> ExperimentConfig:
    data = config.model_dump(mode="json")
    for key, value in variant.settings:
        section, name = key.split(".", 1)
        data[section][name] = value
    return config_from_dict(data, f"--vary {variant.label}") if variant.settings else config


def cell_config(config: ExperimentConfig, dataset: str, seed: int, variant: Variant | None = None) -> ExperimentConfig:
    cfg = variant_config(config, variant) if variant is not None else config
    cfg = cfg.model_copy(deep=True)
    cfg.data.dataset = dataset
    cfg.sampling.seed = seed
    cfg.train.seed = seed
    if cfg.filters.select == "random":  # the control's pick follows the cell's seed too (other rules read no seed)
        cfg.filters.seed = seed
    if cfg.filters.select != "curated":  # each rule measured as it selects, without a person's choices
        cfg.filters.use_choices = False
    return cfg


def check_datasets(database: Engine, datasets: list[str]) -> None:
    """Every dataset is in the workspace, before anything runs."""
    with session_scope(database) as s:
        for name in datasets:
            get_dataset(s, name)


def run_study(
    database: Engine,
    config: ExperimentConfig,
    datasets: list[str],
    seeds: list[int],
    echo: Echo,
    variants: list[Variant] | None = None,
    screen: bool = False,
) -> list[Cell]:
    """Run (or resume) every cell, dataset by dataset, seed by seed, then variant by variant (so the jobs a
    variant shares are made once, by the first); a cell whose chain did not complete stops the study (its work
    is kept). ``screen``: sample and filter only."""
    from engine.pipeline import run_stage

    check_datasets(database, datasets)
    variants = variants or [Variant()]
    plan = [(d, s, v) for d in datasets for s in seeds for v in variants]
    cells = [Cell(d, s, variant=v.label) for d, s, v in plan]
    started = time.monotonic()
    for i, (cell, (_d, _s, variant)) in enumerate(zip(cells, plan, strict=True)):
        elapsed = time.monotonic() - started
        eta = f", ETA {_duration(elapsed / i * (len(cells) - i))}" if i else ""
        where = f"{cell.dataset}, seed {cell.seed}" + (f", {cell.variant}" if cell.variant else "")
        echo(f"study: cell {i + 1}/{len(cells)} ({where}), {_duration(elapsed)} so far{eta}")
        t0 = time.monotonic()
        cfg = cell_config(config, cell.dataset, cell.seed, variant)
        if screen:
            jobs = run_stage(database, cfg, SAMPLE, echo)
            if all(j.status == "completed" for j in jobs):
                jobs += run_stage(database, cfg, FILTER, echo)
        else:
            jobs = run_stage(database, cfg, "all", echo)
        cell.seconds = time.monotonic() - t0
        cell.jobs = [j.id for j in jobs if j.id is not None]
        cell.filter_job = next((j.id for j in jobs if j.kind == FILTER), None)
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


# -- the summary ----------------------------------------------------------------------------------------------
@dataclass
class LabelRuns:
    """One label's evaluations in one (dataset, variant): per seed its evaluation id, and the outcomes by
    question over the distinct evaluations (a deterministic one shared by the seeds counts once)."""

    seeds: list[int]
    per_seed_acc: list[float]
    by_question: dict[int, list[bool]]
    evaluation_ids: tuple[int, ...]


def _label_runs(conn: Any, cells: list[Cell], label: str, cache: dict[int, dict[int, bool]]) -> LabelRuns | None:
    from engine.evaluation.report import outcomes

    seeds, accs, ids = [], [], []
    for c in cells:
        eid = c.evaluations.get(label)
        if eid is None:
            continue
        if eid not in cache:
            cache[eid] = outcomes(conn, eid)
        got = cache[eid]
        if not got:
            continue
        seeds.append(c.seed)
        accs.append(sum(got.values()) / len(got))
        ids.append(eid)
    if not ids:
        return None
    by_question: dict[int, list[bool]] = {}
    for eid in dict.fromkeys(ids):  # distinct, in order
        for q, ok in cache[eid].items():
            by_question.setdefault(q, []).append(bool(ok))
    return LabelRuns(seeds, accs, by_question, tuple(ids))


def _accuracy_row(dataset: str, variant: str, label: str, runs: LabelRuns) -> dict[str, Any]:
    m, sd = mean_sd(runs.per_seed_acc)
    n = len(runs.by_question)
    acc = sum(sum(v) / len(v) for v in runs.by_question.values()) / n
    return {
        "dataset": dataset,
        "variant": variant,
        "label": label,
        "seeds": runs.seeds,
        "evaluations": len(set(runs.evaluation_ids)),
        "n": n,
        "acc": acc,
        "acc_mean": m,
        "acc_sd": sd,
        "acc_ci": list(wilson_interval(round(acc * n), n)),
    }


def _comparison(dataset: str, variant: str, a: str, b: str, ra: LabelRuns, rb: LabelRuns, b_variant: str) -> dict:
    c = clustered_compare(ra.by_question, rb.by_question)
    return {
        "dataset": dataset,
        "variant": variant,
        "a": a,
        "b": b,
        "b_variant": b_variant,
        "n": c.n,
        "diff": c.diff,
        "diff_ci": list(c.diff_ci),
        "p_value": c.p_value,
        "a_only": c.a_only,
        "b_only": c.b_only,
    }


def summarize(database: Engine, cells: list[Cell], variants: list[Variant] | None = None) -> dict[str, Any]:
    """The study's tables as ``{"cells": [...], "comparisons": [...], "coverage": [...]}`` (module docstring)."""
    variants = variants or [Variant(())]
    by_label_variant = {v.label: v for v in variants}
    out_cells: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    vlabels = list(dict.fromkeys(c.variant for c in cells))
    cache: dict[int, dict[int, bool]] = {}
    with database.connect() as conn:
        for dataset in datasets:
            mine = [c for c in cells if c.dataset == dataset and c.evaluations]
            labels = {lbl for c in mine for lbl in c.evaluations}
            ordered = [lbl for lbl in TABLE_ORDER if lbl in labels] + sorted(labels - set(TABLE_ORDER))
            runs: dict[tuple[str, str], LabelRuns] = {}  # (variant, label) -> runs
            shared: set[str] = set()  # labels with the same evaluations in every variant
            for label in ordered:
                per_variant = {
                    v: r for v in vlabels if (r := _label_runs(conn, [c for c in mine if c.variant == v], label, cache))
                }
                if not per_variant:
                    continue
                if len(vlabels) > 1 and len({r.evaluation_ids for r in per_variant.values()}) == 1:
                    shared.add(label)
                    first = next(iter(per_variant.values()))
                    runs.update({(v, label): first for v in vlabels})
                    out_cells.append(_accuracy_row(dataset, "", label, first))
                    continue
                for v, r in per_variant.items():
                    runs[(v, label)] = r
                    out_cells.append(_accuracy_row(dataset, v, label, r))
            maj = _majority_cell(conn, dataset, mine)
            if maj is not None:
                out_cells.append(maj)
            done: set[tuple[str, str, str, str]] = set()
            for v in vlabels:
                pairs = [(a, v, b, v) for a, b in DEFAULT_PAIRS]
                variant = by_label_variant.get(v)
                if variant is not None and variant.get(SELECT_KEY) is not None:
                    for rule in REFERENCE_RULES:
                        ref = variant.replaced(SELECT_KEY, rule).label
                        if ref != v and ref in by_label_variant:
                            pairs += [(label, v, label, ref) for label in VARIANT_LABELS]
                for a, va, b, vb in pairs:
                    ra, rb = runs.get((va, a)), runs.get((vb, b))
                    if ra is None or rb is None:
                        continue
                    va, vb = ("" if a in shared else va), ("" if b in shared else vb)
                    if (a, va, b, vb) in done:  # a pair of shared baselines: once, not once per variant
                        continue
                    done.add((a, va, b, vb))
                    comparisons.append(_comparison(dataset, va or vb, a, b, ra, rb, vb))
        coverage_rows = [
            row for d in datasets for v in vlabels if (row := _coverage_row(conn, d, v, cells)) is not None
        ]
    return {"cells": out_cells, "comparisons": comparisons, "coverage": coverage_rows}


def _coverage_row(conn: Any, dataset: str, variant: str, cells: list[Cell]) -> dict[str, Any] | None:
    """The coverage shares of the (dataset, variant)'s filter jobs (or, unfiltered, sample jobs), pooled over
    seeds (weighted by questions)."""
    from engine.filtering.coverage import coverage

    mine = [c for c in cells if c.dataset == dataset and c.variant == variant and c.jobs]
    if not mine:
        return None
    kinds = dict(conn.execute(select(Job.id, Job.kind).where(Job.id.in_([j for c in mine for j in c.jobs]))).all())  # type: ignore[union-attr]
    seeds, parts = [], []
    for c in mine:
        job = c.filter_job or next((j for j in c.jobs if kinds.get(j) == FILTER), None)
        job = job or next((j for j in c.jobs if kinds.get(j) == SAMPLE), None)
        if job is not None:
            seeds.append(c.seed)
            parts.append(coverage(conn, job))
    questions = sum(p["questions"] for p in parts)
    if not questions:
        return None
    row: dict[str, Any] = {"dataset": dataset, "variant": variant, "seeds": seeds, "questions": questions}
    for key in ("any_correct", "any_correct_filtered", "selected_correct"):
        known = [p for p in parts if p[key] is not None]
        n = sum(p["questions"] for p in known)
        row[key] = sum(p[key] * p["questions"] for p in known) / n if n else None
    selected = [p for p in parts if p.get("selected_paths")]
    n_sel = sum(p["selected_paths"] for p in selected)
    row["selected_paths"] = n_sel
    row["selected_paths_correct"] = (
        sum(p["selected_paths_correct"] * p["selected_paths"] for p in selected) / n_sel if n_sel else None
    )
    return row


def _majority_cell(conn: Any, dataset: str, cells: list[Cell]) -> dict[str, Any] | None:
    eval_ids = sorted({eid for c in cells for eid in c.evaluations.values()})
    if not eval_ids:
        return None
    _answer, count, n = majority_of(conn, eval_ids)
    if not n:
        return None
    return {
        "dataset": dataset,
        "variant": "",
        "label": MAJORITY,
        "seeds": sorted({c.seed for c in cells}),
        "evaluations": 0,
        "n": n,
        "acc": count / n,
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
            "variant": c.variant,
            "status": c.status,
            "seconds": round(c.seconds, 1),
            "jobs": c.jobs,
            "filter_job": c.filter_job,
            "evaluations": c.evaluations,
        }
        for c in cells
    ]
