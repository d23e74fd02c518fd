"""Answer normalisation and parsing per task family, following the Fine-tune-CoT rules.

Families: ``yes_no`` (StrategyQA, coin flip), ``choice`` (letters, e.g. A-E for CommonsenseQA),
``number`` (arithmetic; compared as floats), ``string`` (free text such as last-letter concatenation).
The parser takes the first candidate after an answer marker ("So the answer is", "Therefore, the answer
is"); with no marker it takes the last candidate in the whole text. The marker read is the first "So the
answer is" -- the sentence every training format ends with (engine.training.datasets) and the one the Fmt
metric checks -- and only without one the first other marker: a rationale may say "then the answer is
probably no" while reasoning before it concludes (text-davinci-002 on StrategyQA 505, a distillation sample
whose gold answer is yes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from db.errors import brief
from engine.prompts import ANSWER_MARKER

if TYPE_CHECKING:
    from db.models import Dataset

ANSWER_TYPES = ("yes_no", "choice", "number", "string")

#: Which answer family each known task belongs to (tasks not listed default to ``string``).
TASK_ANSWER_TYPES: dict[str, str] = {
    "strategy_qa": "yes_no",
    "coin_flip": "yes_no",
    "commonsense_qa": "choice",
    "tracking_shuffled_objects": "choice",
    "date_understanding": "choice",
    "multiarith": "number",
    "single_eq": "number",
    "addsub": "number",
    "svamp": "number",
    "gsm8k": "number",
    "basic_arithmetic": "number",
    "leg_counting": "number",
    "last_letter_concatenation": "string",
}

#: Choice letters per task (the paper's sets).
TASK_CHOICE_LETTERS: dict[str, str] = {
    "commonsense_qa": "ABCDE",
    "tracking_shuffled_objects": "ABC",
    "date_understanding": "ABCDEF",
}

#: Answer markers, e.g. "So the answer is", "Therefore, the answer (arabic numerals) is". The one home of the
#: marker: the training formats (engine.training.datasets) cut rationales and paths at it too.
MARKER_RE = re.compile(r"(?:so |therefore,? )?the answer(?: \([^)]*\))? is:?", re.IGNORECASE)
_TRAINED_MARKER_RE = re.compile(re.escape(ANSWER_MARKER) + ":?", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_YES_NO_WORD_RE = re.compile(r"[^\"'\n.\s:,]+")  # what the Fine-tune-CoT splitter keeps, for comparable Acc
_STRING_STRIP_RE = re.compile(r"[\"'.\s]")


def answer_type_for_task(task: str) -> str:
    return TASK_ANSWER_TYPES.get(task, "string")


class AnswerSpan(NamedTuple):
    """A parsed answer and where it stands in the text: ``text[start:end]`` is what the parser read it from."""

    value: str
    start: int
    end: int


def _split_at_marker(text: str) -> int | None:
    """Where the text after the first "So the answer is" starts, else after the first other marker; None."""
    match = _TRAINED_MARKER_RE.search(text) or MARKER_RE.search(text)
    return None if match is None else match.end()


def _yes_no_candidates(text: str, base: int = 0) -> list[AnswerSpan]:
    # the pieces the Fine-tune-CoT splitter leaves are the maximal runs of non-separators
    return [
        AnswerSpan(m.group().lower(), base + m.start(), base + m.end())
        for m in _YES_NO_WORD_RE.finditer(text)
        if m.group().lower() in ("yes", "no")
    ]


def _choice_candidates(text: str, letters: str, base: int = 0) -> list[AnswerSpan]:
    return [
        AnswerSpan(m.group(1), base + m.start(1), base + m.end(1)) for m in re.finditer(rf"\b([{letters}])\b", text)
    ]


def _number_candidates(text: str, base: int = 0) -> list[AnswerSpan]:
    """Numbers with thousands separators read through (``1,234.5``); the span covers the commas."""
    kept = [i for i, ch in enumerate(text) if ch != ","]  # position in ``text`` of each char of the stripped text
    return [
        AnswerSpan(_canonical_number(m.group()), base + kept[m.start()], base + kept[m.end() - 1] + 1)
        for m in _NUMBER_RE.finditer(text.replace(",", ""))
    ]


def _canonical_number(value: str) -> str:
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without the quotes, dots and spaces the string family strips at either end."""
    while start < end and _STRING_STRIP_RE.match(text[start]):
        start += 1
    while end > start and _STRING_STRIP_RE.match(text[end - 1]):
        end -= 1
    return start, end


def _string_candidate(text: str, after_marker: bool, base: int = 0) -> list[AnswerSpan]:
    if after_marker:
        begin = len(text) - len(text.lstrip())
        stop = text.find("\n", begin)
        stop = len(text.rstrip()) if stop < 0 else stop
        cleaned = _STRING_STRIP_RE.sub("", text[begin:stop])
        if not cleaned:
            return []
        start, end = _trimmed(text, begin, stop)
        return [AnswerSpan(cleaned, base + start, base + end)]
    found = []
    for m in re.finditer(r"\S+", text):
        cleaned = _STRING_STRIP_RE.sub("", m.group())
        if cleaned:
            start, end = _trimmed(text, m.start(), m.end())
            found.append(AnswerSpan(cleaned, base + start, base + end))
    return found


def _candidates(text: str, answer_type: str, letters: str, after_marker: bool, base: int = 0) -> list[AnswerSpan]:
    if answer_type == "yes_no":
        return _yes_no_candidates(text, base)
    if answer_type == "choice":
        return _choice_candidates(text, letters, base)
    if answer_type == "number":
        return _number_candidates(text, base)
    return _string_candidate(text, after_marker, base)


def find_answer(text: str, answer_type: str, letters: str = "ABCDE") -> AnswerSpan | None:
    """The answer a model wrote in ``text`` and its character span; None when none is found. The one parsing
    rule: the first candidate after the answer marker, else the last candidate in the whole text."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer type {answer_type!r}")
    after = _split_at_marker(text)
    if after is not None:
        found = _candidates(text[after:], answer_type, letters, after_marker=True, base=after)
        if found:
            return found[0]
    found = _candidates(text, answer_type, letters, after_marker=False)
    return found[-1] if found else None


def parse_answer(text: str, answer_type: str, letters: str = "ABCDE") -> str | None:
    """The answer a model wrote in ``text``, normalised like gold answers; None when none is found."""
    found = find_answer(text, answer_type, letters)
    return found.value if found is not None else None


def has_marker(text: str) -> bool:
    return MARKER_RE.search(text) is not None


def normalize_gold(answer: object, answer_type: str) -> str:
    """Normalise a gold answer so that ``is_correct`` can compare it with a parsed one."""
    if isinstance(answer, bool):
        answer = "yes" if answer else "no"
    value = str(answer).strip()
    if answer_type == "yes_no":
        low = value.lower().strip(" .!")
        if low in ("yes", "true"):
            return "yes"
        if low in ("no", "false"):
            return "no"
        raise ValueError(f"not a yes/no answer: {brief(value)}")
    if answer_type == "choice":
        letter = value.strip("() .").upper()
        if len(letter) != 1 or not letter.isalpha():
            raise ValueError(f"not a choice letter: {brief(value)}")
        return letter
    if answer_type == "number":
        found = _number_candidates(value)
        if not found:
            raise ValueError(f"not a number: {brief(value)}")
        return found[0].value
    cleaned = _STRING_STRIP_RE.sub("", value)
    if not cleaned:
        raise ValueError("empty answer")
    return cleaned


def is_correct(predicted: str | None, gold: str, answer_type: str) -> bool:
    if predicted is None:
        return False
    if answer_type == "number":
        try:
            return abs(float(predicted) - float(gold)) < 1e-6
        except ValueError:
            return False
    if answer_type == "string":
        return predicted.lower() == gold.lower()
    return predicted == gold


def grade(text: str, gold: str, answer_type: str, letters: str = "ABCDE") -> tuple[str | None, bool]:
    """(parsed answer, correct against the gold answer): how a teacher's rationale is graded."""
    answer = parse_answer(text, answer_type, letters)
    return answer, is_correct(answer, gold, answer_type)


@dataclass
class AnswerSpec:
    """How answers of a dataset are parsed: its answer family and, for choices, its letters."""

    answer_type: str = "yes_no"
    letters: str = "ABCDE"


def answer_spec(dataset: Dataset) -> AnswerSpec:
    """The answer spec of a dataset row (its ``choice_letters``, A-E when it names none). Sampling, the
    filters and the teacher read answers through it."""
    return AnswerSpec(dataset.answer_type, (dataset.meta or {}).get("choice_letters") or "ABCDE")


def parse_path_answer(text: str, gold: str, spec: AnswerSpec) -> tuple[str | None, bool]:
    """(parsed answer, correct): :func:`grade` with a dataset's :class:`AnswerSpec`."""
    return grade(text, gold, spec.answer_type, spec.letters)
