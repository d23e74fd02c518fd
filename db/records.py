"""The in-memory shape every importer produces before anything touches the workspace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class QuestionRecord:
    split: str
    index: int  # sample index in the source
    position: int  # order inside the split
    text: str
    answer: str  # normalised gold answer
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    name: str
    task: str
    answer_type: str
    source: str
    origin: str
    records: list[QuestionRecord]
    meta: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.records:
            out[rec.split] = out.get(rec.split, 0) + 1
        return out
