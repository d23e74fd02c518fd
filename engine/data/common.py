"""Helpers shared by the importers: reading files with clear errors, choices, answer-type detection."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from db.errors import UserError, first_line
from engine import answers

_CHOICE_RE = re.compile(r"\(([A-Z])\)\s*(.*?)(?=\s*,?\s*\([A-Z]\)|$)", re.DOTALL)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts (4,300)
        raise UserError(f"{path}: invalid JSON: {first_line(exc, 120)}") from None


def inline_choices(question: str) -> list[str] | None:
    """Choices written into the question text as ``Answer choices: (A) x, (B) y, ...``."""
    marker = question.rfind("Answer choices:")
    if marker < 0:
        return None
    found = _CHOICE_RE.findall(question[marker:])
    return [text.strip().rstrip(".") for _letter, text in found] or None


def detect_answer_type(values: list[str], has_choices: bool) -> str:
    """Guess the answer family of a dataset from its gold answers."""

    def all_parse(kind: str) -> bool:
        for value in values:
            try:
                answers.normalize_gold(value, kind)
            except ValueError:
                return False
        return bool(values)

    if all_parse("yes_no"):
        return "yes_no"
    if has_choices and all_parse("choice"):
        return "choice"
    if all(re.fullmatch(r"\s*-?[\d,]*\.?\d+\s*", v) for v in values) and values:
        return "number"
    return "string"


def normalize(value: object, answer_type: str, where: str) -> str:
    try:
        return answers.normalize_gold(value, answer_type)
    except ValueError as exc:
        raise UserError(f"{where}: field 'answer': {exc}") from None


def require_text(row: Any, field: str, where: str) -> str:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    if field not in row:
        raise UserError(f"{where}: missing field {field!r}")
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UserError(f"{where}: field {field!r} must be text, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise UserError(f"{where}: field {field!r} is empty")
    check_unicode(text, f"{where}: field {field!r}")
    return text


def check_unicode(text: str, where: str) -> None:
    """Refuse text SQLite cannot store: JSON may spell a lone UTF-16 surrogate (``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(
            f"{where}: not valid Unicode text (a lone surrogate {text[exc.start]!r} at character {exc.start})"
        ) from None
