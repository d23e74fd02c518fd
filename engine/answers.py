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

from db.errors import brief
from engine.prompts import ANSWER_MARKER

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
_YES_NO_SPLIT_RE = re.compile(r"[\"'\n.\s:,]+")  # the Fine-tune-CoT splitter, for comparable Acc
_STRING_STRIP_RE = re.compile(r"[\"'.\s]")


def answer_type_for_task(task: str) -> str:
    return TASK_ANSWER_TYPES.get(task, "string")


def _split_at_marker(text: str) -> tuple[str | None, str]:
    """Return (text after the first "So the answer is", else after the first other marker, or None; whole text)."""
    match = _TRAINED_MARKER_RE.search(text) or MARKER_RE.search(text)
    if match is None:
        return None, text
    return text[match.end() :], text


def _yes_no_candidates(text: str) -> list[str]:
    return [w for w in _YES_NO_SPLIT_RE.split(text.lower()) if w in ("yes", "no")]


def _choice_candidates(text: str, letters: str) -> list[str]:
    return re.findall(rf"\b([{letters}])\b", text)


def _number_candidates(text: str) -> list[str]:
    return [_canonical_number(m) for m in _NUMBER_RE.findall(text.replace(",", ""))]


def _canonical_number(value: str) -> str:
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def _string_candidate(text: str, after_marker: bool) -> list[str]:
    if after_marker:
        first_line = text.strip().split("\n", 1)[0]
        cleaned = _STRING_STRIP_RE.sub("", first_line)
        return [cleaned] if cleaned else []
    words = [_STRING_STRIP_RE.sub("", w) for w in text.split()]
    return [w for w in words if w]


def _candidates(text: str, answer_type: str, letters: str, after_marker: bool) -> list[str]:
    if answer_type == "yes_no":
        return _yes_no_candidates(text)
    if answer_type == "choice":
        return _choice_candidates(text, letters)
    if answer_type == "number":
        return _number_candidates(text)
    return _string_candidate(text, after_marker)


def parse_answer(text: str, answer_type: str, letters: str = "ABCDE") -> str | None:
    """The answer a model wrote in ``text``, normalised like gold answers; None when none is found."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer type {answer_type!r}")
    after, whole = _split_at_marker(text)
    if after is not None:
        found = _candidates(after, answer_type, letters, after_marker=True)
        if found:
            return found[0]
    found = _candidates(whole, answer_type, letters, after_marker=False)
    return found[-1] if found else None


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
        return found[0]
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
