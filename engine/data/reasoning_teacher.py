"""Importer for the Fine-tune-CoT ("reasoning-teacher") format: a JSON list of questions plus a split file
``{"train": [indices], "test": [indices]}``. The task name is the dataset file's stem."""

from __future__ import annotations

from pathlib import Path

from db.errors import UserError, brief, plain
from db.records import DatasetSpec, QuestionRecord
from engine import answers
from engine.data.common import inline_choices, normalize, read_json, require_text


def load(name: str, dataset_file: Path, split_file: Path, task: str | None = None) -> DatasetSpec:
    dataset_file, split_file = Path(dataset_file), Path(split_file)
    rows = read_json(dataset_file)
    if not isinstance(rows, list):
        raise UserError(f"{dataset_file}: expected a JSON list of questions, got {type(rows).__name__}")
    split = read_json(split_file)
    if not isinstance(split, dict) or not split:
        raise UserError(f'{split_file}: expected an object like {{"train": [...], "test": [...]}}')
    task = task or dataset_file.stem
    answer_type = answers.answer_type_for_task(task)
    letters = answers.TASK_CHOICE_LETTERS.get(task)

    records: list[QuestionRecord] = []
    seen: dict[int, str] = {}
    for split_name, indices in split.items():
        if not isinstance(indices, list):
            raise UserError(f"{split_file}: field {brief(split_name)} must be a list of indices")
        for position, index in enumerate(indices):
            where = f"{split_file}: {plain(split_name)}[{position}]"
            if isinstance(index, bool) or not isinstance(index, int):
                raise UserError(f"{where}: index {brief(index)} is not an integer")
            if not 0 <= index < len(rows):
                raise UserError(f"{where}: index {index} does not exist in {dataset_file} ({len(rows)} rows)")
            if index in seen:
                raise UserError(f"{where}: index {index} is already in split {brief(seen[index])}")
            seen[index] = split_name
            row_where = f"{dataset_file}: row {index}"
            text = require_text(rows[index], "question", row_where)
            gold = require_text(rows[index], "answer", row_where)
            choices = inline_choices(text) if answer_type == "choice" else None
            extra = {k: v for k, v in rows[index].items() if k not in ("question", "answer")}
            records.append(
                QuestionRecord(
                    split=split_name,
                    index=index,
                    position=position,
                    text=text,
                    answer=normalize(gold, answer_type, row_where),
                    choices=choices,
                    meta=extra,
                )
            )
    meta = {"choice_letters": letters} if letters else {}
    return DatasetSpec(name, task, answer_type, "reasoning-teacher", str(dataset_file), records, meta)
