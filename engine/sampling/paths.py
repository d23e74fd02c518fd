"""A sampled path and what a sampler is; which tokens never start a branch; a path's confidence (imported by every
backend)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class SampledPath:
    branch: int  # 0..first_tokens-1, in order of the first token's probability (0 = most probable)
    sample: int  # 0..per_branch-1
    branch_token: str  # decoded first token
    text: str  # everything the student produced after "Answer:", the branch token included
    token_ids: list[int]  # exactly those tokens (branch token first), EOS excluded
    tokens: int  # len(token_ids)
    mean_logprob: float  # mean log_softmax(raw logits) of those tokens given the prompt, same passes as sampling
    perplexity: float  # exp(-mean_logprob)
    # per token, p(top-1) - p(top-2) of the plain distribution it was sampled from (path confidence); None where
    # the backend does not give it
    margins: list[float] | None = None


class Sampler(Protocol):
    tokenizer: Any

    def sample(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool] = ...,
    ) -> None:
        """``items``: (key, question text). Calls ``on_done(key, paths)`` as soon as all
        ``first_tokens * per_branch`` paths of that question are finished; checks ``should_stop`` between
        decode steps and returns early when it is true (unfinished questions are not reported)."""
        ...

    def close(self) -> None:
        """Release what the sampler holds beyond this process (vLLM's engine and worker processes); the
        transformers sampler holds nothing."""
        ...


def branch_excluded_ids(tokenizer: Any, eos_ids: Iterable[int] = ()) -> list[int]:
    """Token ids that never start a branch: the tokenizer's special tokens and the EOS ids.

    A chat model's end-of-turn token (SmolLM2-Instruct's ``<|im_end|>``, its EOS) is among the top five first
    tokens after ``Answer:`` for most StrategyQA questions; a "path" that starts by ending the text is no
    reasoning path, so the branches are the top ``first_tokens`` among the other tokens (their log-probs are
    still those of the full distribution)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    ids.update(int(i) for i in eos_ids)
    return sorted(i for i in ids if i >= 0)


def text_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """How every backend turns a path's token ids into its text (special tokens kept, no clean-up), so that
    character offsets in the text map back to tokens."""
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def answer_token_span(decode: Callable[[list[int]], str], token_ids: list[int], start: int, end: int) -> range:
    """The positions of the tokens whose decoded characters overlap ``[start, end)`` of ``decode(token_ids)``.

    Token ``i`` covers the characters ``len(decode(ids[:i]))`` to ``len(decode(ids[:i + 1]))``; the prefix lengths
    grow with ``i``, so two binary searches find the first token ending after ``start`` and the first ending at or
    after ``end`` (a dozen decodes per path, not one per token)."""

    def first_ending_after(chars: int) -> int:
        lo, hi = 0, len(token_ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(decode(token_ids[: mid + 1])) > chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    if not token_ids or end <= start:
        return range(0)
    return range(first_ending_after(start), first_ending_after(end - 1) + 1)


def path_confidence(
    margins: list[float] | None,
    token_ids: list[int],
    decode: Callable[[list[int]], str],
    answer_span: tuple[int, int] | None,
) -> float | None:
    """Δ of CoT-decoding (Wang & Zhou 2024): the mean, over the tokens of the path's answer, of each token's
    margin p(top-1) - p(top-2) under the student's plain next-token distribution at that position.

    The answer is the one the project's parser reads (:func:`engine.answers.find_answer` on the path's text:
    the first candidate after "So the answer is", else the last candidate in the text); its tokens are those whose
    characters overlap the answer's characters (:func:`answer_token_span`; a token holding " yes" counts once).
    None when the parser finds no answer or the backend gave no margins."""
    if margins is None or answer_span is None:
        return None
    positions = answer_token_span(decode, token_ids, *answer_span)
    values = [margins[i] for i in positions if i < len(margins)]
    return sum(values) / len(values) if values else None
