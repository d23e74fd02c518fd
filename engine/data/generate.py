"""Offline procedural datasets from the ``reasoning-gym`` package (the app's embedded default data)."""

from __future__ import annotations

from db.errors import UserError
from db.records import DatasetSpec, QuestionRecord
from engine.data.common import detect_answer_type, normalize

#: Tasks known to give short, parseable answers; any other reasoning-gym task works as a free string.
RECOMMENDED_TASKS = ("syllogism", "letter_counting", "coin_flip", "basic_arithmetic", "leg_counting")
#: The embedded default loop's task: of the tasks measured (docs/usage.md, "Why syllogism"), the one on which the
#: bundled student has latent coverage and SERT beats zero-shot with a paired 95% interval above 0 at the default size.
DEFAULT_TASK = "syllogism"


def available_tasks() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def generate(name: str, task: str, train: int, test: int, seed: int = 0) -> DatasetSpec:
    import reasoning_gym

    if task not in available_tasks():
        raise UserError(f"unknown reasoning-gym task {task!r} (try: {', '.join(RECOMMENDED_TASKS)})")
    if train < 0 or test < 0 or train + test == 0:
        raise UserError("--train and --test must be non-negative and not both zero")
    # One generator run for both splits, so that no question appears in both.
    entries = list(reasoning_gym.create_dataset(task, size=train + test, seed=seed))
    # Detected, not looked up: reasoning-gym's coin_flip asks for a probability, unlike Fine-tune-CoT's.
    answer_type = detect_answer_type([str(e["answer"]) for e in entries], has_choices=False)
    records = []
    for index, entry in enumerate(entries):
        split, position = ("train", index) if index < train else ("test", index - train)
        meta = {k: v for k, v in entry.get("metadata", {}).items() if isinstance(v, str | int | float | bool)}
        records.append(
            QuestionRecord(
                split=split,
                index=index,
                position=position,
                text=entry["question"].strip(),
                answer=normalize(entry["answer"], answer_type, f"{task}[{index}]"),
                meta=meta,
            )
        )
    origin = f"reasoning-gym:{task}?seed={seed}"
    return DatasetSpec(name, task, answer_type, "generated", origin, records, {"seed": seed})
