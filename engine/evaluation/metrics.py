"""Evaluation metrics of DESIGN.md section 1, per output and per evaluation.

- **Acc**: share of outputs whose answer (``engine.answers.parse_answer``: the first candidate after "So the
  answer is" / "Therefore, the answer is", else the last candidate in the text) equals the gold answer.
- **Fmt**: share of well-formed outputs: the marker "So the answer is" is present, an answer can be parsed
  from the text after it, and the output is not degenerate. Degenerate means a repetition loop: the 4-gram
  repetition rate rep-4 = 1 − distinct/total token 4-grams of the output exceeds ``DEGENERATE_REP4`` = 0.6.
  (On the 2,290 recorded text-davinci-002 StrategyQA rationales the 99th percentile of rep-4 is 0.38 and
  exactly the three that loop on one sentence are above 0.6; rep-2 does not separate them: list-like but
  sound rationales reach 0.6.)
- **Len**: mean reasoning length in student tokens: the tokens before the marker (the whole output when
  there is none), without a leading "Let's think step by step." trigger.
- **Rep**: mean unigram repetition rate 1 − distinct/total over the reasoning tokens; an output without
  reasoning tokens counts 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from engine import answers
from engine.prompts import ANSWER_MARKER, COT_TRIGGER
from engine.training.datasets import ANSWER_SENTENCE_RE

DEGENERATE_REP4 = 0.6
_FMT_MARKER_RE = re.compile(re.escape(ANSWER_MARKER), re.IGNORECASE)
_TRIGGER_RE = re.compile(r"^\s*" + re.escape(COT_TRIGGER), re.IGNORECASE)

Tokenize = Callable[[str], Sequence[int]]


def rep1(tokens: Sequence[int]) -> float:
    """Unigram repetition rate: 1 − distinct/total (0.0 for no tokens)."""
    return 1.0 - len(set(tokens)) / len(tokens) if tokens else 0.0


def rep_n(tokens: Sequence[int], n: int) -> float:
    """n-gram repetition rate: 1 − distinct/total n-grams (0.0 when there is no n-gram)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def reasoning_part(text: str) -> str:
    """The text before the answer marker, without a leading chain-of-thought trigger."""
    match = _FMT_MARKER_RE.search(text) or ANSWER_SENTENCE_RE.search(text)
    head = text[: match.start()] if match else text
    return _TRIGGER_RE.sub("", head).strip()


@dataclass(frozen=True)
class Scored:
    answer: str | None
    correct: bool
    well_formed: bool
    marker: bool
    degenerate: bool
    tokens: int  # generated tokens
    reasoning_tokens: int
    rep: float  # unigram repetition of the reasoning tokens
    rep4: float  # 4-gram repetition of the whole output

    def extras(self) -> dict:
        """What goes into ``Prediction.scores`` beside the columns."""
        data = asdict(self)
        return {k: data[k] for k in ("marker", "degenerate", "reasoning_tokens", "rep", "rep4")}


def score_output(
    text: str,
    gold: str,
    answer_type: str,
    tokenize: Tokenize,
    *,
    letters: str = "ABCDE",
    output_tokens: Sequence[int] | None = None,
) -> Scored:
    """Score one generated output against its gold answer."""
    answer = answers.parse_answer(text, answer_type, letters)
    correct = answers.is_correct(answer, gold, answer_type)
    match = _FMT_MARKER_RE.search(text)
    marker = match is not None
    after_marker = answers.parse_answer(text[match.end() :], answer_type, letters) if match else None
    tokens = list(output_tokens) if output_tokens is not None else list(tokenize(text))
    loop = rep_n(tokens, 4)
    degenerate = loop > DEGENERATE_REP4
    reasoning = list(tokenize(reasoning_part(text)))
    return Scored(
        answer=answer,
        correct=correct,
        well_formed=marker and after_marker is not None and not degenerate,
        marker=marker,
        degenerate=degenerate,
        tokens=len(tokens),
        reasoning_tokens=len(reasoning),
        rep=rep1(reasoning),
        rep4=loop,
    )


def aggregate(scored: Sequence[Scored]) -> dict[str, float | int | None]:
    """Acc, Fmt (fractions 0-1), Len (tokens), Rep over the outputs of one evaluation."""
    n = len(scored)
    if n == 0:
        return {"n": 0, "acc": None, "fmt": None, "len": None, "rep": None}
    return {
        "n": n,
        "acc": sum(s.correct for s in scored) / n,
        "fmt": sum(s.well_formed for s in scored) / n,
        "len": sum(s.reasoning_tokens for s in scored) / n,
        "rep": sum(s.rep for s in scored) / n,
    }
