"""The texts of the training samples (DESIGN.md section 1), one home below the steps: the training sets
(engine.training.datasets) are built with them, and the filter stage's gold likelihood (engine.filtering.gold)
scores exactly the SERT sample's text. The formats and why they are so are told in engine.training.datasets.
"""

from __future__ import annotations

import re

from engine import answers
from engine.prompts import ANSWER_MARKER, COT_TRIGGER, clean

#: Bumped when a format changes, so that jobs trained on an older format are not taken for current ones.
FORMAT_VERSION = 2  # 2: only the final answer sentence of a rationale is cut, and SERT paths are cut alike

#: An answer sentence's opening, as engine.answers recognises it ("So the answer is", "Therefore, the answer is").
ANSWER_SENTENCE_RE = answers.MARKER_RE
_CONNECTIVE = r"(?:so|therefore|thus|hence)"
_TRAILING_CONNECTIVE_RE = re.compile(rf"\b{_CONNECTIVE}\s*,?\s*$", re.IGNORECASE)
_LEADING_CONNECTIVE_RE = re.compile(rf"^{_CONNECTIVE}\b", re.IGNORECASE)
#: Where a sentence ends: ., ! or ? before whitespace, or a line break (a decimal point is no end).
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s)|\n")


# -- formats ----------------------------------------------------------------------------------------------
def answer_surface(answer: str, answer_type: str) -> str:
    """The gold answer as the student should write it (gold answers are stored normalised)."""
    if answer_type == "yes_no":
        return answers.normalize_gold(answer, "yes_no")
    if answer_type == "choice":
        return answer.strip("() .").upper()
    return answer.strip()


def _answer_sentence(answer: str) -> str:
    return f"{ANSWER_MARKER} {answer}."


def final_answer_start(text: str) -> int | None:
    """Where the final answer sentence of ``text`` begins (the index to cut at), or None when its last
    sentence states no answer.

    The last answer marker counts only when nothing but the rest of its sentence follows it. The cut is at the
    marker when the sentence starts with it ("The answer is no.", "Therefore, the answer is no.") or when a
    connective leads into it ("Pears float, so the answer is no." keeps "Pears float"); when another clause
    leads into it ("If we mean a majority, then the answer is no.") the whole sentence goes."""
    matches = list(ANSWER_SENTENCE_RE.finditer(text))
    if not matches:
        return None
    marker = matches[-1]
    rest = text[marker.end() :]
    if any(rest[m.end() :].strip() for m in _SENTENCE_END_RE.finditer(rest)):
        return None  # more sentences follow: the answer was stated mid-reasoning
    head = text[: marker.start()]
    ends = list(_SENTENCE_END_RE.finditer(head))
    sentence_start = ends[-1].end() if ends else 0
    lead = head[sentence_start:]
    if not lead.strip() or _LEADING_CONNECTIVE_RE.match(marker.group(0)) or _TRAILING_CONNECTIVE_RE.search(lead):
        return marker.start()
    return sentence_start


def strip_stated_answer(text: str) -> str:
    """``text`` without its final answer sentence (see ``final_answer_start``), whitespace collapsed; a clause
    kept before "so the answer is" gets its period back."""
    start = final_answer_start(text)
    if start is None:
        return clean(text)
    kept = _TRAILING_CONNECTIVE_RE.sub("", text[:start].rstrip())
    kept = clean(kept).rstrip(" ,;:-")
    if kept and kept[-1] not in ".!?":
        kept += "."
    return kept


def sert_completion(path: str, answer: str) -> str:
    """`` {path} So the answer is {a}.``, the path's own final answer sentence cut -- unless that sentence is
    all the path has: then it stays whole (every selected path is a sample, as DESIGN.md has it)."""
    return f" {strip_stated_answer(path) or clean(path)} {_answer_sentence(answer)}"


def distill_completion(rationale: str, answer: str) -> str:
    return f" {COT_TRIGGER} {clean(rationale)} {_answer_sentence(answer)}"


def finetune_completion(answer: str) -> str:
    return f" {_answer_sentence(answer)}"
