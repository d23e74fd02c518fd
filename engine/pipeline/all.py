"""Stage ``all``: the whole SERT chain of one config, skipping what is already complete.

sample → filter → self-train (SERT) → teacher → distill (SERT+RD, or RD with ``train.distill_from =
"base"``) → eval. With ``eval.baselines`` (the default) it also trains the answers-only Finetune baseline and
RD (distillation from the base model) and evaluates the base model zero-shot, so that the report shows the
paper's Table II columns side by side.

The teacher stage runs only when ``teacher.base_url`` is set; otherwise distillation uses the teacher
rationales already in the workspace (imported recorded ones) and says so. With no rationales at all, the
distillation runs are skipped with a warning and the rest of the chain goes on.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from db.errors import UserError
from db.models import Job
from engine.config import ExperimentConfig
from engine.jobs import config_dataset

Echo = Callable[[str], None]


def run_all(database: Engine, config: ExperimentConfig, echo: Echo) -> list[Job]:
    from engine.evaluation.stage import base_target, evaluate, job_target
    from engine.filtering.stage import run_filter
    from engine.sampling.stage import run_sample
    from engine.teacher.stage import run_teacher
    from engine.training.stage import distill_plan, finetune_plan, run_plan, sert_plan

    dataset = config_dataset(database, config)
    jobs: list[Job] = []

    def stopped() -> bool:
        """A job that did not complete (cancelled) stops the chain; its work is kept for a re-run."""
        bad = [j for j in jobs if j.status != "completed"]
        if bad:
            echo(f"all: stopping after job {bad[0].id} {bad[0].kind} ({bad[0].status})")
        return bool(bad)

    jobs += run_sample(database, config, echo)
    if stopped():
        return jobs
    jobs += run_filter(database, config, echo)
    if stopped():
        return jobs
    sert = run_plan(database, config, dataset, sert_plan(database, config, dataset), echo)
    jobs.append(sert)
    trained: list[Job] = [sert]
    if stopped():
        return jobs

    if config.teacher.base_url:
        jobs += run_teacher(database, config, echo)
        if stopped():
            return jobs
    else:
        echo("teacher: no teacher.base_url; distillation uses the teacher rationales already in the workspace")

    variants = [config.train.distill_from]
    if config.eval.baselines:
        variants += [v for v in ("self-train", "base") if v not in variants]
    for variant in variants:
        variant_config = config.model_copy(deep=True)
        variant_config.train.distill_from = variant  # type: ignore[assignment]
        try:
            plan = distill_plan(database, variant_config, dataset)
        except UserError as exc:
            echo(f"warning: distill ({'SERT+RD' if variant == 'self-train' else 'RD'}) skipped: {exc}")
            continue
        job = run_plan(database, variant_config, dataset, plan, echo)
        jobs.append(job)
        trained.append(job)
        if stopped():
            return jobs

    if config.eval.baselines:
        finetune = run_plan(database, config, dataset, finetune_plan(database, config, dataset), echo)
        jobs.append(finetune)
        trained.append(finetune)
        if stopped():
            return jobs

    targets = [base_target(config)] if config.eval.baselines else []
    targets += [job_target(database, j) for j in trained if j.status == "completed"]
    for target in targets:
        jobs.append(evaluate(database, config, dataset, target, echo))
        if stopped():
            return jobs
    return jobs
