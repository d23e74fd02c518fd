"""The three training sets, built from the workspace, and the text formats they share with evaluation.

Formats (DESIGN.md section 1); the prompt is everything up to and including ``Answer:`` and is masked out of
the loss, the completion is what the student learns to write:

- SERT (``self-train``):   ``Question: {q}. Answer:`` + `` {path} So the answer is {a}.``
- distillation (``distill``): ``Question: {q}. Answer:`` + `` Let's think step by step. {R} So the answer is {a}.``
- Finetune (``finetune``), the answers-only baseline: ``Question: {q}. Answer:`` + `` So the answer is {a}.``
  The answers-only sample keeps the marker so that one parser (after "So the answer is") and one format
  metric serve every model; its reasoning is simply empty.

``{q}`` is the question text; when it already ends with ``?``, ``.`` or ``!`` no extra period is added (no
``...?. Answer:``). ``{path}`` and ``{R}`` have their whitespace collapsed to single spaces (a path starts
with its branch token, usually a leading space); a rationale that states its own answer ("Therefore, the
answer is ...") is cut before that sentence so that the sample states the gold answer once. ``{a}`` is the
gold answer in its natural surface form: yes/no, the choice letter, the number, or the string.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, select

from db.models import Dataset, Job, Path, Question
from engine import answers

ANSWER_MARKER = "So the answer is"
COT_TRIGGER = "Let's think step by step."
#: Bumped when a format changes, so that jobs trained on an older format are not taken for current ones.
FORMAT_VERSION = 1

#: An answer sentence's opening, as engine.answers recognises it ("So the answer is", "Therefore, the answer is").
ANSWER_SENTENCE_RE = re.compile(r"(?:so |therefore,? )?the answer(?: \([^)]*\))? is:?", re.IGNORECASE)
_TRAILING_CONNECTIVE_RE = re.compile(r"(?:\b(?:so|therefore|thus|hence)\s*,?\s*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One supervised sample: the masked prompt and the completion the loss is computed on."""

    prompt: str
    completion: str
    question_id: int | None = None
    path_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# -- formats ----------------------------------------------------------------------------------------------
def clean(text: str) -> str:
    return " ".join(text.split())


def prompt_text(question: str) -> str:
    """``Question: {q}. Answer:`` — the prompt of training and evaluation alike."""
    q = clean(question)
    sep = "" if q.endswith(("?", ".", "!")) else "."
    return f"Question: {q}{sep} Answer:"


def answer_surface(answer: str, answer_type: str) -> str:
    """The gold answer as the student should write it (gold answers are stored normalised)."""
    if answer_type == "yes_no":
        return answers.normalize_gold(answer, "yes_no")
    if answer_type == "choice":
        return answer.strip("() .").upper()
    return answer.strip()


def _answer_sentence(answer: str) -> str:
    return f"{ANSWER_MARKER} {answer}."


def strip_stated_answer(text: str) -> str:
    """Cut a rationale before its own answer sentence ("Therefore, the answer is no.")."""
    match = ANSWER_SENTENCE_RE.search(text)
    if match is not None:
        text = text[: match.start()]
    text = _TRAILING_CONNECTIVE_RE.sub("", text.rstrip())
    return clean(text).rstrip(" ,;:")


def sert_completion(path: str, answer: str) -> str:
    return f" {clean(path)} {_answer_sentence(answer)}"


def distill_completion(rationale: str, answer: str) -> str:
    return f" {COT_TRIGGER} {clean(rationale)} {_answer_sentence(answer)}"


def finetune_completion(answer: str) -> str:
    return f" {_answer_sentence(answer)}"


def digest(samples: list[Sample]) -> str:
    """A short hash of a training set's content: part of a training job's fingerprint."""
    blob = json.dumps([[s.prompt, s.completion] for s in samples], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- the sets -----------------------------------------------------------------------------------------------
def training_paths(session: Session, sample_job_id: int) -> list[tuple[Path, Question]]:
    """The SERT set: paths selected by the filters and not rejected by a person, plus every path a person
    accepted; in split order, then path id."""
    stmt = (
        select(Path, Question)
        .join(Question, Question.id == Path.question_id)
        .where(
            Path.job_id == sample_job_id,
            Path.source == "self",
            or_(
                Path.decision == "accepted",
                (Path.selected == True) & or_(Path.decision.is_(None), Path.decision != "rejected"),  # type: ignore[union-attr]  # noqa: E712
            ),
        )
        .order_by(Question.position, Path.id)
    )
    return [(p, q) for p, q in session.exec(stmt).all()]


def sert_samples(session: Session, sample_job: Job, dataset: Dataset) -> list[Sample]:
    assert sample_job.id is not None
    out = []
    for path, question in training_paths(session, sample_job.id):
        if not clean(path.text):
            continue
        out.append(
            Sample(
                prompt=prompt_text(question.text),
                completion=sert_completion(path.text, answer_surface(question.answer, dataset.answer_type)),
                question_id=question.id,
                path_id=path.id,
                meta={"decision": path.decision, "selected": path.selected},
            )
        )
    return out


def distill_samples(
    session: Session,
    teacher_job: Job,
    dataset: Dataset,
    split: str,
    *,
    correct_only: bool,
    question_ids: set[int] | None = None,
) -> list[Sample]:
    """Teacher rationales of ``teacher_job`` on ``split`` (only those with a correct teacher answer when
    ``correct_only``), restricted to ``question_ids`` when given (``data.train_limit``)."""
    from engine.teacher.store import teacher_paths

    assert teacher_job.id is not None
    out = []
    for path, question in teacher_paths(session, teacher_job.id, split=split, correct_only=correct_only):
        if question_ids is not None and question.id not in question_ids:
            continue
        rationale = strip_stated_answer(path.text)
        if not rationale:
            continue
        out.append(
            Sample(
                prompt=prompt_text(question.text),
                completion=distill_completion(rationale, answer_surface(question.answer, dataset.answer_type)),
                question_id=question.id,
                path_id=path.id,
            )
        )
    return out


def finetune_samples(questions: list[Question], dataset: Dataset) -> list[Sample]:
    return [
        Sample(
            prompt=prompt_text(q.text),
            completion=finetune_completion(answer_surface(q.answer, dataset.answer_type)),
            question_id=q.id,
        )
        for q in questions
    ]
