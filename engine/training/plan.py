"""What a training job learns from and where it starts: the plan the stage builds and every process trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.training.datasets import Sample


@dataclass
class TrainingPlan:
    """Everything a training job needs: what to learn from, where to start, how to call it."""

    kind: str
    label: str
    samples: list[Sample]
    parent_id: int | None
    start_model: str  # "default", a hub id / path, or a checkpoint directory
    start: dict[str, Any] = field(default_factory=dict)  # lineage of the start model, for the summary
    notes: list[str] = field(default_factory=list)
    #: The self-training round (``run --stage self-train --rounds N``): round r > 1 samples with and starts from
    #: the final checkpoint of round r - 1. Round 1 is the plain self-train stage.
    round: int = 1
