"""Repetition of a token sequence, below the steps that store or judge it (sampling stores a path's rep-2,
the filters judge it: DESIGN.md section 1, filter 3)."""

from __future__ import annotations

from collections.abc import Sequence


def rep2(token_ids: Sequence[int]) -> float:
    """Bigram repetition rate: 1 - distinct bigrams / total bigrams (0.0 when there is no bigram)."""
    bigrams = list(zip(token_ids, token_ids[1:], strict=False))
    if not bigrams:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)
