"""Importer through Hugging Face ``datasets``: a hub id (online only) or a local directory, either saved
with ``save_to_disk`` or holding data files (json/jsonl/csv/parquet)."""

from __future__ import annotations

from pathlib import Path

from db.errors import UserError, first_line
from db.records import DatasetSpec, QuestionRecord
from engine.data.common import detect_answer_type, normalize, require_text


def _load(path: str, config: str | None):
    import datasets

    local = Path(path)
    # A file that fails to parse is our one `error:` line below; datasets also logs it (ERROR, with pyarrow's
    # traceback) through its own handler, onto whatever stderr was when it was first imported.
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(path, config) if config else datasets.load_dataset(path)
    except FileNotFoundError as exc:
        raise UserError(f"{path}: dataset not found ({exc})") from None
    except Exception as exc:  # datasets raises many kinds (DatasetNotFoundError, ConnectionError, ...)
        raise UserError(f"{path}: could not load the dataset: {first_line(exc)}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def load(
    name: str,
    path: str,
    *,
    splits: list[str] | None = None,
    config: str | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
    choices_field: str = "choices",
    task: str = "generic",
    answer_type: str | None = None,
) -> DatasetSpec:
    loaded = _load(path, config)
    wanted = splits or list(loaded)
    for split in wanted:
        if split not in loaded:
            raise UserError(f"{path}: no split {split!r} (has: {', '.join(loaded)})")
    rows = []
    for split in wanted:
        columns = loaded[split].column_names
        for field in (question_field, answer_field):
            if field not in columns:
                raise UserError(f"{path}: split {split!r} has no field {field!r} (has: {', '.join(columns)})")
        for position, row in enumerate(loaded[split]):
            where = f"{path}: {split}[{position}]"
            question = require_text(row, question_field, where)
            gold = require_text(row, answer_field, where)
            choices = row.get(choices_field)
            if isinstance(choices, dict) and "text" in choices:  # e.g. CommonsenseQA on the hub
                choices = choices["text"]
            rows.append((split, position, question, gold, choices, row, where))

    kind = answer_type or detect_answer_type([r[3] for r in rows], any(r[4] for r in rows))
    mapped = {question_field, answer_field, choices_field}
    records = [
        QuestionRecord(
            split=split,
            index=index,
            position=position,
            text=question,
            answer=normalize(gold, kind, where),
            choices=list(choices) if choices else None,
            meta={k: v for k, v in row.items() if k not in mapped and _jsonable(v)},
        )
        for index, (split, position, question, gold, choices, row, where) in enumerate(rows)
    ]
    return DatasetSpec(name, task, kind, "hf", path, records)


def _jsonable(value: object) -> bool:
    return isinstance(value, str | int | float | bool | list | dict) or value is None
