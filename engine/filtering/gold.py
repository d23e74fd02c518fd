"""``filters.select = "gold_likelihood"``: LaTRO's self-reward (arXiv 2411.04282) as a selection rule.

A surviving path's score is the student's log-likelihood of the gold answer sentence after it::

    gold_logp = log p(" So the answer is {gold}." | "Question: {q}. Answer:" + " {path}")

on exactly the text of the SERT training sample the path would become (:mod:`engine.training.datasets`: the
prompt ``training_prompt(q)``, the completion ``sert_completion(path, answer_surface(gold))``, the path's own
final answer sentence cut), tokenized as training tokenizes it (the prompt with the tokenizer's special tokens,
the completion without, the two concatenated; :func:`engine.training.trainer.encode_samples`), and split where the
answer sentence starts: the score is the sum of the next-token log-softmax of the answer sentence's tokens (the
EOS that training appends after it is not part of the score). A token that straddles the split counts with the
answer sentence (with the space-prefixed BPE of the bundled student none does).

One forward per path, right-padded batches of paths, in float32 on the student's device: the decoder's hidden
states, then the LM head and the log-softmax only at the answer sentence's positions (no vocabulary-sized
logits of the whole text). Only survivors of the filters are scored, once: the score is stored on the path
(``Path.gold_logp``), a property of the path and the student (the sample job's), not of the thresholds, so a
re-filter scores only survivors that have none yet and a killed job keeps the scores already written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.prompts import ANSWER_MARKER, training_prompt
from engine.sample_texts import answer_surface, sert_completion

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from engine.config import ExperimentConfig
    from engine.filtering.rules import AnswerSpec
    from engine.jobs import JobContext

#: Paths per scoring forward (right-padded); a batch's scratch is its hidden states, not its logits.
BATCH_SIZE = 16
#: Paths scored between two writes to the workspace (what a killed job can lose).
WRITE_EVERY = 64


@dataclass(frozen=True)
class GoldText:
    """The SERT sample of a path, and where in its completion the gold answer sentence starts."""

    prompt: str
    completion: str
    split: int  # completion[split:] == " So the answer is {gold}."

    @property
    def context(self) -> str:
        return self.prompt + self.completion[: self.split]

    @property
    def answer_sentence(self) -> str:
        return self.completion[self.split :]


def gold_text(question: str, path: str, gold_surface: str) -> GoldText:
    """The SERT training sample of ``path`` (gold answer ``gold_surface``, as :func:`answer_surface` writes it)."""
    completion = sert_completion(path, gold_surface)
    sentence = f" {ANSWER_MARKER} {gold_surface}."
    assert completion.endswith(sentence), (completion, sentence)
    return GoldText(training_prompt(question), completion, len(completion) - len(sentence))


def encode_gold(tokenizer: Any, texts: Sequence[GoldText]) -> list[tuple[list[int], int]]:
    """Per text: the token ids of prompt + completion (as training encodes them, without the EOS) and how many of
    them come before the answer sentence."""
    if not texts:
        return []
    prompts = tokenizer([t.prompt for t in texts], add_special_tokens=True)["input_ids"]
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer([t.completion for t in texts], add_special_tokens=False, return_offsets_mapping=fast)
    out = []
    for i, t in enumerate(texts):
        ids = list(enc["input_ids"][i])
        if fast:
            before = sum(1 for _start, end in enc["offset_mapping"][i] if end <= t.split)
        else:  # a slow tokenizer has no offsets: the answer sentence's own tokens must end the completion
            tail = tokenizer(t.answer_sentence, add_special_tokens=False)["input_ids"]
            if ids[len(ids) - len(tail) :] != list(tail):
                raise ValueError(f"the answer sentence's tokens do not end the completion: {t.completion!r}")
            before = len(ids) - len(tail)
        if before >= len(ids):
            raise ValueError(f"no answer-sentence token in {t.completion!r}")
        out.append((list(prompts[i]) + ids, len(prompts[i]) + before))
    return out


def score_encoded(model: Any, encoded: Sequence[tuple[list[int], int]], batch_size: int = BATCH_SIZE) -> list[float]:
    """The sum of log p(token | everything before it) over the tokens from each row's split on, one forward per
    row, rows batched (right-padded, longest first), in the model's dtype (the caller loads it in float32)."""
    import torch

    from engine.models import selective_logits_supported

    scores: list[float] = [0.0] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    device = next(model.parameters()).device
    selective = selective_logits_supported(model)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i][0]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                n = len(encoded[i][0])
                ids[r, :n] = torch.tensor(encoded[i][0])
                mask[r, :n] = 1
            ids, mask = ids.to(device), mask.to(device)
            attention = None if bool(mask.all()) else mask
            # positions t-1 predict the answer tokens t
            where_row, where_pos, targets = [], [], []
            for r, i in enumerate(rows):
                row_ids, split = encoded[i]
                for t in range(split, len(row_ids)):
                    where_row.append(r)
                    where_pos.append(t - 1)
                    targets.append(row_ids[t])
            index = (torch.tensor(where_row, device=device), torch.tensor(where_pos, device=device))
            if selective:
                hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False)
                logits = model.get_output_embeddings()(hidden.last_hidden_state[index])
            else:
                logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[index]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, torch.tensor(targets, device=device).unsqueeze(-1)).squeeze(-1)
            sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
            sums.index_add_(0, index[0], picked.double())
            for r, i in enumerate(rows):
                scores[i] = float(sums[r])
    return scores


def score_texts(model: Any, tokenizer: Any, texts: Sequence[GoldText], batch_size: int = BATCH_SIZE) -> list[float]:
    """:func:`score_encoded` of :func:`encode_gold`: each text's gold log-likelihood."""
    return score_encoded(model, encode_gold(tokenizer, texts), batch_size)


def load_scorer(config: ExperimentConfig, log: Callable[[str], None]) -> tuple[Any, Any]:
    """The student of ``config`` in float32, for scoring."""
    from engine.models import load_model

    log(f"loading the student {config.student.model!r} in float32 to score gold log-likelihoods")
    return load_model(config.student.model, device=config.student.device, dtype="float32", progress=log)


def score_survivors(
    database: Engine,
    sample_job_id: int,
    config: ExperimentConfig,
    answer_type: str,
    spec: AnswerSpec,
    ctx: JobContext,
    scorer: tuple[Any, Any] | None = None,
) -> dict[str, int]:
    """Score every path of ``sample_job_id`` that survives ``config.filters`` and has no ``gold_logp`` yet, and store
    the scores as they come (every :data:`WRITE_EVERY` paths). ``scorer``: (model, tokenizer) when the caller has
    them (tests); otherwise the student is loaded only when something is left to score. Returns the counts."""
    from db.models import Path
    from db.session import session_scope
    from engine.filtering.rules import job_inputs, judge_inputs

    with session_scope(database) as s:
        inputs = job_inputs(s, sample_job_id)
    results, _counts = judge_inputs(inputs, config.filters, spec)
    passed = {r.id for r in results if r.passed}
    todo: list[tuple[int, GoldText]] = []
    for question, paths in inputs.values():
        gold = answer_surface(question.answer, answer_type)
        todo.extend(
            (p.id, gold_text(question.text, p.text, gold)) for p in paths if p.id in passed and p.gold_logp is None
        )
    counts = {"survivors": len(passed), "scored_before": len(passed) - len(todo), "scored": 0}
    ctx.log(
        f"gold likelihood: {len(passed)} surviving paths, {counts['scored_before']} scored before, {len(todo)} to score"
    )
    if not todo:
        return counts
    model, tokenizer = scorer or load_scorer(config, ctx.log)
    t0 = time.monotonic()
    for start in range(0, len(todo), WRITE_EVERY):
        ctx.check_cancel()
        chunk = todo[start : start + WRITE_EVERY]
        scores = score_texts(model, tokenizer, [t for _id, t in chunk])
        with session_scope(database) as s:
            rows = [{"id": pid, "gold_logp": v} for (pid, _t), v in zip(chunk, scores, strict=True)]
            s.bulk_update_mappings(Path, rows)  # type: ignore[arg-type]
        counts["scored"] += len(chunk)
        rate = counts["scored"] / max(time.monotonic() - t0, 1e-9)
        ctx.progress(counts["scored"], len(todo), "paths scored", extra=f"{rate:.1f} paths/s")
    ctx.log(f"gold likelihood: scored {counts['scored']} paths in {time.monotonic() - t0:.1f} s")
    return counts
