"""The stage registry behind ``sert-tui run CONFIG --stage NAME``: the top of the engine.

Each step of the method is a folder with a ``stage.py`` whose ``run_*`` function ``(database, config, echo) ->
list[Job]`` finds or creates its job (resuming an unfinished one with the same fingerprint, skipping a completed
one), runs it and returns the jobs it touched. This table names them; the step folders import nothing from
here. Modules are imported only when a stage runs (they may import torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from db.errors import UserError
from db.vocabulary import ALL, DISTILL, EVAL, FILTER, FINETUNE_KIND, SAMPLE, SELF_TRAIN, STAGE_NAMES, TEACHER

if TYPE_CHECKING:  # the app imports engine.pipeline.processes before its first frame: nothing heavy here
    from sqlalchemy.engine import Engine

    from db.models import Job
    from engine.config import ExperimentConfig

Echo = Callable[[str], None]
StageFn = Callable[["Engine", "ExperimentConfig", Echo], "list[Job]"]

#: Stage name → (module, function). ``all`` is the whole chain (engine.pipeline.all).
STAGE_FUNCTIONS: dict[str, tuple[str, str]] = {
    SAMPLE: ("engine.sampling.stage", "run_sample"),
    FILTER: ("engine.filtering.stage", "run_filter"),
    SELF_TRAIN: ("engine.training.stage", "run_self_train"),
    TEACHER: ("engine.teacher.stage", "run_teacher"),
    DISTILL: ("engine.training.stage", "run_distill"),
    FINETUNE_KIND: ("engine.training.stage", "run_finetune"),
    EVAL: ("engine.evaluation.stage", "run_eval"),
    ALL: ("engine.pipeline.all", "run_all"),
}
assert tuple(STAGE_FUNCTIONS) == STAGE_NAMES, "db.vocabulary.STAGE_NAMES and the registry must agree"


def stage_names() -> list[str]:
    return list(STAGE_FUNCTIONS)


def stage_function(name: str) -> StageFn:
    if name not in STAGE_FUNCTIONS:
        raise UserError(f"unknown stage {name!r} (stages: {', '.join(STAGE_FUNCTIONS)})")
    module, function = STAGE_FUNCTIONS[name]
    return getattr(importlib.import_module(module), function)


#: The stages that read a person's decisions (the SERT training set): they start only with the decisions the
#: app had to keep in its journal applied (db.decision_journal.apply_pending), or stop with an error naming it.
READS_DECISIONS = frozenset({SELF_TRAIN, ALL})


def run_stage(database: Engine, config: ExperimentConfig, name: str, echo: Echo) -> list[Job]:
    if name in READS_DECISIONS:
        from db.decision_journal import apply_pending

        apply_pending(database, echo)
    return stage_function(name)(database, config, echo)


def run_stage_distributed(database: Engine, config: ExperimentConfig, name: str, echo: Echo) -> list[Job]:
    """``run --stage X`` inside one process of ``accelerate launch``: rank 0 runs the stage and owns the
    workspace, the other ranks train what it broadcasts (engine.training.accelerate_engine)."""
    from engine.training.accelerate_engine import run_on_ranks

    return run_on_ranks(database, config, lambda: run_stage(database, config, name, echo))
