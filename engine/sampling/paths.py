"""A sampled path and what a sampler is; which tokens never start a branch (imported by every backend)."""

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


def branch_excluded_ids(tokenizer: Any, eos_ids: Iterable[int] = ()) -> list[int]:
    """Token ids that never start a branch: the tokenizer's special tokens and the EOS ids.

    A chat model's end-of-turn token (SmolLM2-Instruct's ``<|im_end|>``, its EOS) is among the top five first
    tokens after ``Answer:`` for most StrategyQA questions; a "path" that starts by ending the text is no
    reasoning path, so the branches are the top ``first_tokens`` among the other tokens (their log-probs are
    still those of the full distribution)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    ids.update(int(i) for i in eos_ids)
    return sorted(i for i in ids if i >= 0)
