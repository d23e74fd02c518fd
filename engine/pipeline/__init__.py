"""Stage registry behind ``sert-tui run CONFIG --stage NAME``.

Each stage module registers a function ``(engine, config, echo) -> list[Job]`` that finds or creates its
job (resuming an unfinished one with the same fingerprint, skipping a completed one), runs it and returns
the jobs it touched. ``all`` runs the stages of ``ALL_ORDER`` in turn.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from db.models import Job
from db.vocabulary import FINETUNE_KIND, JOB_KINDS
from engine.config import ExperimentConfig
from engine.errors import UserError

Echo = Callable[[str], None]
StageFn = Callable[[Engine, ExperimentConfig, Echo], list[Job]]

STAGES: dict[str, StageFn] = {}
#: What ``--stage all`` runs when no ``all`` stage is registered: the method's order without the finetune baseline.
ALL_ORDER: list[str] = [k for k in JOB_KINDS if k != FINETUNE_KIND]


def stage(name: str) -> Callable[[StageFn], StageFn]:
    def register(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

    return register


def _load_stage_modules() -> None:
    """Import the modules that register stages (kept lazy: they may import torch)."""
    import importlib

    for module in STAGE_MODULES:
        importlib.import_module(module)


#: Modules whose import registers stages with ``@stage``.
STAGE_MODULES: list[str] = [
    "engine.stages.sample",
    "engine.stages.filter",
    "engine.teacher.stage",
    "engine.training.stage",
    "engine.evaluation.stage",
    "engine.stages.all",
]


def stage_names() -> list[str]:
    _load_stage_modules()
    return [*STAGES, *(["all"] if "all" not in STAGES else [])] if STAGES else []


def run_stage(engine: Engine, config: ExperimentConfig, name: str, echo: Echo) -> list[Job]:
    _load_stage_modules()
    if name == "all" and "all" not in STAGES:
        jobs: list[Job] = []
        for step in ALL_ORDER:
            if step in STAGES:
                jobs.extend(STAGES[step](engine, config, echo))
        return jobs
    if name not in STAGES:
        known = ", ".join(stage_names()) or "(none)"
        raise UserError(f"unknown stage {name!r} (stages: {known})")
    return STAGES[name](engine, config, echo)
