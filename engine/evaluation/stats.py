"""The statistics behind every comparison the tool shows (DESIGN.md section 6).

- One accuracy: the **Wilson score interval** (95%). Unlike the normal approximation it stays inside [0, 1]
  and keeps its coverage at the small n and near-0 or near-1 accuracies of short evaluations.
- Two runs on the same questions: the difference acc(a) - acc(b) over the questions both answered, a
  **paired bootstrap** interval of it (questions resampled with replacement, both runs' outcomes kept
  together; percentile interval, seeded so a report reads the same twice), and the **exact McNemar test**:
  under "no difference" each discordant question (one run right, the other wrong) is a fair coin, so the
  two-sided p-value is the binomial tail of the smaller discordant count, doubled and capped at 1.
- The majority baseline: always answering the most common gold answer of the questions evaluated.

Pure Python: the app imports this on its UI path, where torch and numpy stay unloaded.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct / n``; (0, 1) when nothing was evaluated."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if correct <= 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    high = 1.0 if correct >= n else min(1.0, centre + half)
    return (low, high)


def share_interval(share: float | None, n: int) -> tuple[float, float] | None:
    """The Wilson interval of a stored share (accuracy, format rate) of ``n`` questions; None when there is none."""
    if share is None or n <= 0:
        return None
    return wilson_interval(round(share * n), n)


def fmt_interval(acc: float | None, ci: Sequence[float] | None) -> str:
    """``52.5 [45.6, 59.3]``: an accuracy in percent with its interval, as every table prints it."""
    if acc is None:
        return "-"
    if ci is None:
        return f"{100 * acc:.1f}"
    return f"{100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: questions only run a got right, and
    questions only run b got right."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    a: Sequence[bool],
    b: Sequence[bool],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b) with questions resampled in pairs."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    n = len(a)
    if n == 0:
        return (-1.0, 1.0)
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo_i = int(math.floor((1 - level) / 2 * (resamples - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (resamples - 1)))
    return (means[lo_i], means[hi_i])


@dataclass(frozen=True)
class Paired:
    """Two runs compared on the questions both answered."""

    n: int
    acc_a: float
    acc_b: float
    a_only: int  # questions a got right and b wrong
    b_only: int
    diff: float  # acc(a) - acc(b)
    diff_ci: tuple[float, float]
    p_value: float


def paired_compare(
    a: Mapping[Hashable, bool], b: Mapping[Hashable, bool], resamples: int = BOOTSTRAP_RESAMPLES
) -> Paired:
    """Compare two runs' per-question outcomes (question key → correct) on the questions both answered; keys
    are question ids, or (seed, question id) when seeds are pooled."""
    common = sorted(a.keys() & b.keys())  # type: ignore[type-var]
    xa = [bool(a[q]) for q in common]
    xb = [bool(b[q]) for q in common]
    n = len(common)
    a_only = sum(1 for x, y in zip(xa, xb, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(xa, xb, strict=True) if y and not x)
    acc_a = sum(xa) / n if n else 0.0
    acc_b = sum(xb) / n if n else 0.0
    return Paired(
        n=n,
        acc_a=acc_a,
        acc_b=acc_b,
        a_only=a_only,
        b_only=b_only,
        diff=acc_a - acc_b,
        diff_ci=paired_bootstrap_ci(xa, xb, resamples=resamples),
        p_value=mcnemar_exact(a_only, b_only),
    )


def majority(golds: Iterable[str]) -> tuple[str | None, int, int]:
    """The most common gold answer (ties: the smallest string, so the choice is stable), how many questions
    have it, and how many there are."""
    counts = Counter(g.strip().lower() for g in golds)
    n = sum(counts.values())
    if not n:
        return (None, 0, 0)
    answer, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return (answer, count, n)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return (0.0, 0.0)
    m = sum(values) / len(values)
    if len(values) < 2:
        return (m, 0.0)
    return (m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)))
