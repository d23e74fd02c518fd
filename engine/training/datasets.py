"""The three training sets, built from the workspace, and the text formats they share with evaluation.

Formats (DESIGN.md section 1); the prompt is everything up to and including ``Answer:`` and is masked out of
the loss, the completion is what the student learns to write:

- SERT (``self-train``):   ``Question: {q}. Answer:`` + `` {path} So the answer is {a}.``
- distillation (``distill``): ``Question: {q}. Answer:`` + `` Let's think step by step. {R} So the answer is {a}.``
- Finetune (``finetune``), the answers-only baseline: ``Question: {q}. Answer:`` + `` So the answer is {a}.``
  The answers-only sample keeps the marker so that one parser (after "So the answer is") and one format
  metric serve every model; its reasoning is simply empty.

``{q}`` is the question text, whitespace collapsed; when it already ends with ``?``, ``.`` or ``!`` no extra
period is added. The paper's template puts a period after the question, but its questions need not end in
one: every StrategyQA question ends in ``?`` (``...?. Answer:``) and every CommonsenseQA question in ``.``
after its last choice (``...(E) avoid.. Answer:``). The online teacher is asked with exactly this prompt plus
the trigger (``teacher_prompt`` = ``training_prompt(q) + " Let's think step by step."``), so a rationale R
continues the very text the distillation sample puts before it. (The recorded text-davinci-002 rationales of
../shared/data were requested by the Fine-tune-CoT authors with their own prompt, ``Q: {q}\nA: Let's think
step by step.``; they are imported as they are.) Stage 1 samples with another prompt, the paper's zero-shot
``Question: {q}\nAnswer:`` (engine.sampling): the latent paths are the student's continuation of that, and
are then trained on behind the stage-2 prompt above, as in the paper.

``{path}`` and ``{R}`` have their whitespace collapsed to single spaces (a path starts with its branch
token, usually a leading space), and their own *final* answer sentence is cut (``strip_stated_answer``), so
that a sample states one answer, the gold one, once, at its end, where the parser reads it:

- Only the final sentence is cut, and only when it states an answer ("So, the answer is no.", "..., so the
  answer is yes." keeps the clause before "so"). An answer stated mid-reasoning and followed by more text is
  reasoning and stays: text-davinci-002 on StrategyQA 170 writes "First, can a dolphin write? The answer is
  no. Dolphins don't have hands, ... Second, can a dolphin remember things? The answer is yes. ..." before
  its conclusion; cutting at the first "the answer is" (as this module once did) left "First, can a dolphin
  write?" of the whole rationale. 36 of the 2,290 recorded StrategyQA rationales state an answer more than
  once.
- A SERT path gets the same cut: the paper appends the gold answer to the path, the path being the
  reasoning; a path that ends by stating its own answer ("... The answer is no.") would otherwise teach
  "The answer is no. So the answer is yes." Such paths are kept (the paper has no correctness filter; that
  is ``filters.require_correct``), minus that sentence. A path that is nothing but one answer sentence
  ("The answer is no, because a pear cannot sink in water.") stays whole: every selected or accepted path is a
  sample. (A rationale with nothing left gives no distillation sample.)

``{a}`` is the gold answer in its natural surface form: yes/no, the choice letter, the number, or the string.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, func, select

from db.app_queries import in_training_set
from db.models import Dataset, FilterVerdict, Job, Path, Question
from engine.prompts import clean, training_prompt
from engine.sample_texts import (  # noqa: F401  (re-exported: the formats of these sets)
    ANSWER_SENTENCE_RE,
    FORMAT_VERSION,
    answer_surface,
    distill_completion,
    final_answer_start,
    finetune_completion,
    sert_completion,
    strip_stated_answer,
)


@dataclass(frozen=True)
class Sample:
    """One supervised sample: the masked prompt and the completion the loss is computed on."""

    prompt: str
    completion: str
    question_id: int | None = None
    path_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def digest(samples: list[Sample]) -> str:
    """A short hash of a training set's content: part of a training job's fingerprint."""
    blob = json.dumps([[s.prompt, s.completion] for s in samples], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- the sets -----------------------------------------------------------------------------------------------
def _training_rows(
    session: Session, sample_job_id: int, filter_job_id: int, choices: bool = True
) -> list[tuple[Path, Question, bool]]:
    selected = (
        select(FilterVerdict.selected)
        .where(FilterVerdict.filter_job_id == filter_job_id, FilterVerdict.path_id == Path.id)
        .scalar_subquery()
    )
    stmt = (
        select(Path, Question, func.coalesce(selected, False))
        .join(Question, Question.id == Path.question_id)
        .where(
            Path.job_id == sample_job_id,
            Path.source == "self",
            in_training_set(filter_job_id, choices),
        )
        .order_by(Question.position, Path.id)
    )
    return [(p, q, bool(sel)) for p, q, sel in session.exec(stmt).all()]


def training_paths(
    session: Session, sample_job_id: int, filter_job_id: int, choices: bool = True
) -> list[tuple[Path, Question]]:
    """The SERT set: paths of ``sample_job_id`` that filter job ``filter_job_id`` selected (its own verdicts, not
    the path rows' display copy) and a person did not reject, plus every path a person accepted; in split order,
    then path id (db.app_queries.in_training_set; ``choices``: with the review screen's choices on top)."""
    return [(p, q) for p, q, _sel in _training_rows(session, sample_job_id, filter_job_id, choices)]


def sert_samples(
    session: Session, sample_job: Job, dataset: Dataset, filter_job_id: int, choices: bool = True
) -> list[Sample]:
    """The SERT samples of :func:`training_paths`."""
    assert sample_job.id is not None
    out = []
    for path, question, selected in _training_rows(session, sample_job.id, filter_job_id, choices):
        if not clean(path.text):
            continue
        out.append(
            Sample(
                prompt=training_prompt(question.text),
                completion=sert_completion(path.text, answer_surface(question.answer, dataset.answer_type)),
                question_id=question.id,
                path_id=path.id,
                meta={"decision": path.decision, "selected": selected},
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
                prompt=training_prompt(question.text),
                completion=distill_completion(rationale, answer_surface(question.answer, dataset.answer_type)),
                question_id=question.id,
                path_id=path.id,
            )
        )
    return out


def finetune_samples(questions: list[Question], dataset: Dataset) -> list[Sample]:
    return [
        Sample(
            prompt=training_prompt(q.text),
            completion=finetune_completion(answer_surface(q.answer, dataset.answer_type)),
            question_id=q.id,
        )
        for q in questions
    ]
