"""Which process of a multi-process run this is, from the environment ``accelerate launch`` (torchrun) sets.

Cheap to import (no torch): the CLI asks it before deciding how to run a stage.
"""

from __future__ import annotations

import os


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                continue
    return default


def world_size() -> int:
    return _env_int("WORLD_SIZE", default=1)


def rank() -> int:
    return _env_int("RANK", default=0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", default=0)


def is_distributed() -> bool:
    """True inside one process of a run of several (``accelerate launch --num-processes N`` with N > 1)."""
    return world_size() > 1


def is_main_process() -> bool:
    """The process that owns the workspace: creates the job, writes metrics, checkpoints and the summary."""
    return rank() == 0
