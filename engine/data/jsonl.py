"""Importer for JSON Lines: one object per line with ``question``, ``answer``, optional ``choices`` and
``split`` (default ``train``); other field names can be mapped."""

from __future__ import annotations

import json
from pathlib import Path

from db.errors import UserError, first_line
from db.records import DatasetSpec, QuestionRecord
from engine.data.common import detect_answer_type, normalize, require_text


def load(
    name: str,
    file: Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    choices_field: str = "choices",
    split_field: str = "split",
    task: str = "generic",
    answer_type: str | None = None,
) -> DatasetSpec:
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file}: no such file")
    rows: list[tuple[int, dict]] = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{file}: line {lineno}: invalid JSON: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer with more digits than Python converts (4,300)
            raise UserError(f"{file}: line {lineno}: invalid JSON: {first_line(exc, 120)}") from None
        if not isinstance(row, dict):
            raise UserError(f"{file}: line {lineno}: expected a JSON object")
        rows.append((lineno, row))
    if not rows:
        raise UserError(f"{file}: no rows")

    parsed = []
    for lineno, row in rows:
        where = f"{file}: line {lineno}"
        question = require_text(row, question_field, where)
        gold = require_text(row, answer_field, where)
        choices = row.get(choices_field)
        if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
            raise UserError(f"{where}: field {choices_field!r} must be a list of strings")
        split = row.get(split_field, "train")
        if not isinstance(split, str) or not split:
            raise UserError(f"{where}: field {split_field!r} must be a split name")
        parsed.append((lineno, question, gold, choices, split, row))

    kind = answer_type or detect_answer_type([p[2] for p in parsed], any(p[3] for p in parsed))
    positions: dict[str, int] = {}
    records = []
    mapped = {question_field, answer_field, choices_field, split_field}
    for index, (lineno, question, gold, choices, split, row) in enumerate(parsed):
        position = positions.get(split, 0)
        positions[split] = position + 1
        records.append(
            QuestionRecord(
                split=split,
                index=index,
                position=position,
                text=question,
                answer=normalize(gold, kind, f"{file}: line {lineno}"),
                choices=choices,
                meta={k: v for k, v in row.items() if k not in mapped},
            )
        )
    return DatasetSpec(name, task, kind, "jsonl", str(file), records)
