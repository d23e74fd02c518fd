"""The statistics behind every comparison the tool shows (DESIGN.md section 6).

- One accuracy: the **Wilson score interval** (95%). Unlike the normal approximation it stays inside [0, 1]
  and keeps its coverage at the small n and near-0 or near-1 accuracies of short evaluations.
- Two runs on the same questions, one outcome per question each: the difference acc(a) - acc(b) over the
  questions both answered, a **paired bootstrap** interval of it (questions resampled with replacement, both
  runs' outcomes kept together; percentile interval, seeded so a report reads the same twice), and the **exact
  McNemar test**: under "no difference" each discordant question (one run right, the other wrong) is a fair
  coin, so the two-sided p-value is the binomial tail of the smaller discordant count, doubled and capped at 1
  (``paired_compare``, ``paired_bootstrap_ci``, ``mcnemar_exact``).
- Two methods over several seeds (``clustered_compare``): **the question is the unit**, not the (seed, question)
  pair, since the same questions recur in every seed and a deterministic evaluation (zero-shot) is one outcome
  per question however many seeds ran. Per question q, d_q = mean over a's seeds - mean over b's seeds; the
  difference is the mean of d_q, its interval a percentile bootstrap over questions (a question's seeds go
  together: d_q is resampled), and its p-value a two-sided **sign-flip permutation test** on d_q (statistic
  |sum d_q|). With one outcome per question on each side this is exactly ``mcnemar_exact``, and a comparison
  whose seeds all repeat the same outcomes reads the same as one seed. ``report compare``, the results screen
  and the study all go through it.
- The majority baseline: always answering the most common gold answer of the questions evaluated.

Pure Python: the app imports this on its UI path, where torch and numpy stay unloaded.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

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


def bootstrap_means(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> list[float]:
    """The means of ``resamples`` resamples of ``values`` drawn with replacement (each of the same size as
    ``values``), sorted; seeded, so the same values give the same list. Empty when ``values`` is."""
    n = len(values)
    if n == 0:
        return []
    rng = random.Random(seed)
    return sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))


def percentile_interval(sorted_means: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of sorted bootstrap means: with R means, the values at (0-based) indices
    floor((1 - level) / 2 * (R - 1)) and ceil((1 + level) / 2 * (R - 1)), i.e. numpy's ``percentile`` with
    ``method="lower"`` and ``method="higher"`` at 100 (1 - level) / 2 and 100 (1 + level) / 2."""
    r = len(sorted_means)
    if r == 0:
        return (-1.0, 1.0)
    lo_i = int(math.floor((1 - level) / 2 * (r - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (r - 1)))
    return (sorted_means[lo_i], sorted_means[hi_i])


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
    if not a:
        return (-1.0, 1.0)
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    return percentile_interval(bootstrap_means(diffs, resamples, seed), level)


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


#: Permutation tests enumerate every sign pattern exactly up to this many non-zero d_q when the counting
#: below (:func:`_sign_flip_counts`) would be too large.
EXACT_FLIPS_MAX = 16
#: The counting of :func:`_sign_flip_counts` stays exact while (non-zero d_q) x (possible sums) is below this.
EXACT_COUNT_CELLS = 4_000_000
#: Random sign flips when neither exact way fits; p = (count + 1) / (flips + 1).
RANDOM_FLIPS = 20_000


@dataclass(frozen=True)
class Clustered:
    """Two methods compared per question over seeds (:func:`clustered_compare`).

    ``n``: questions both sides answered; ``acc_a`` / ``acc_b``: the mean over those questions of each side's
    per-question accuracy (its mean over seeds); ``diff`` = acc_a - acc_b = mean of d_q; ``a_only`` /
    ``b_only``: questions with d_q > 0 / d_q < 0 (with one seed: the discordant questions a / b got right);
    ``diff_ci``: 95% bootstrap interval over questions; ``p_value``: the two-sided sign-flip permutation test on
    d_q; ``test``: how that p-value was computed, "mcnemar" (every non-zero d_q is +-1: the binomial, exact
    McNemar), "exact" (every sign pattern counted) or "random" (seeded random flips); ``seeds_a`` /
    ``seeds_b``: the most outcomes one question has on each side (1 for a deterministic evaluation)."""

    n: int
    acc_a: float
    acc_b: float
    a_only: int
    b_only: int
    diff: float
    diff_ci: tuple[float, float]
    p_value: float
    test: str = "mcnemar"
    seeds_a: int = 1
    seeds_b: int = 1


def _mean_fraction(outcomes: Sequence[bool]) -> Fraction:
    return Fraction(sum(1 for x in outcomes if x), len(outcomes))


def _sign_flip_counts(weights: Sequence[int]) -> list[int]:
    """How many of the 2^m sign patterns give each sum of +-w_i: index s + sum(w) holds the count of sum s."""
    total = sum(weights)
    counts = [0] * (2 * total + 1)
    counts[total] = 1
    for w in weights:
        new = [0] * len(counts)
        for i, k in enumerate(counts):
            if k:
                new[i - w] += k
                new[i + w] += k
        counts = new
    return counts


def sign_flip_p(d: Sequence[Fraction | int], seed: int = BOOTSTRAP_SEED) -> tuple[float, str]:
    """Two-sided paired sign-flip permutation p-value of per-question differences ``d`` (exact rationals, as
    :func:`clustered_compare` makes them): under "no difference" each d_q is as likely as -d_q, and the p-value
    is the share of the 2^m sign patterns whose |sum| is at least the observed |sum d_q|. Zeros are dropped
    (their sign changes nothing). Returns (p, how), how being:

    - "mcnemar": every non-zero d_q is +1 or -1, so the count of positive ones is binomial: ``mcnemar_exact``.
    - "exact": the d_q are scaled to integers by their common denominator and every sign pattern is counted,
      by counting sums one question at a time, or by listing the patterns when there are at most
      ``EXACT_FLIPS_MAX`` non-zero d_q; no floating-point ties either way.
    - "random": ``RANDOM_FLIPS`` seeded random sign patterns, p = (count + 1) / (flips + 1) (never 0).
    """
    nonzero = [Fraction(x) for x in d if x != 0]
    m = len(nonzero)
    if m == 0:
        return 1.0, "mcnemar"
    if all(abs(x) == 1 for x in nonzero):
        return mcnemar_exact(sum(1 for x in nonzero if x > 0), sum(1 for x in nonzero if x < 0)), "mcnemar"
    scale = math.lcm(*(x.denominator for x in nonzero))
    ints = [int(x * scale) for x in nonzero]
    observed = abs(sum(ints))
    weights = [abs(w) for w in ints]
    total = sum(weights)
    if m * (2 * total + 1) <= EXACT_COUNT_CELLS:
        counts = _sign_flip_counts(weights)
        extreme = sum(k for i, k in enumerate(counts) if abs(i - total) >= observed)
        return min(1.0, extreme / 2**m), "exact"
    if m <= EXACT_FLIPS_MAX:
        extreme = 0
        for pattern in range(2**m):
            s = sum(w if pattern >> i & 1 else -w for i, w in enumerate(weights))
            extreme += abs(s) >= observed
        return min(1.0, extreme / 2**m), "exact"
    rng = random.Random(seed)
    extreme = 0
    for _ in range(RANDOM_FLIPS):
        bits = rng.getrandbits(m)
        s = sum(w if bits >> i & 1 else -w for i, w in enumerate(weights))
        extreme += abs(s) >= observed
    return (extreme + 1) / (RANDOM_FLIPS + 1), "random"


def clustered_compare(
    a: Mapping[Hashable, Sequence[bool]],
    b: Mapping[Hashable, Sequence[bool]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Clustered:
    """Compare two methods per question (DESIGN.md section 6): ``a`` and ``b`` map a question key to that
    method's outcomes (correct or not) on it, one per seed; a deterministic evaluation (zero-shot) passes one
    outcome per question, so it counts once whatever the other side's seeds. Questions missing from either
    side, or with no outcome on one side, are left out; the two sides need not have the same number of seeds.

    d_q = mean(a[q]) - mean(b[q]); ``diff`` = mean of d_q over the n common questions; ``diff_ci`` = the
    percentile interval of ``resamples`` seeded bootstrap means of d_q (:func:`clustered_bootstrap_means`, a
    question's seeds resampled together); ``p_value`` = :func:`sign_flip_p` of d_q. With one outcome per
    question on both sides this is :func:`paired_compare` (same diff, interval and p-value: exact McNemar)."""
    common = sorted(q for q in a.keys() & b.keys() if len(a[q]) and len(b[q]))  # type: ignore[type-var]
    n = len(common)
    if n == 0:
        return Clustered(0, 0.0, 0.0, 0, 0, 0.0, (-1.0, 1.0), 1.0)
    exact = [_mean_fraction(a[q]) - _mean_fraction(b[q]) for q in common]
    d = question_differences(a, b, common)
    acc_a = sum(sum(1 for x in a[q] if x) / len(a[q]) for q in common) / n
    acc_b = sum(sum(1 for x in b[q] if x) / len(b[q]) for q in common) / n
    p_value, test = sign_flip_p(exact, seed=seed)
    return Clustered(
        n=n,
        acc_a=acc_a,
        acc_b=acc_b,
        a_only=sum(1 for x in exact if x > 0),
        b_only=sum(1 for x in exact if x < 0),
        diff=sum(d) / n,
        diff_ci=percentile_interval(bootstrap_means(d, resamples, seed)),
        p_value=p_value,
        test=test,
        seeds_a=max(len(a[q]) for q in common),
        seeds_b=max(len(b[q]) for q in common),
    )


def question_differences(
    a: Mapping[Hashable, Sequence[bool]], b: Mapping[Hashable, Sequence[bool]], keys: Iterable[Hashable] | None = None
) -> list[float]:
    """d_q = mean(a[q]) - mean(b[q]) for each key (default: the sorted common keys with outcomes on both sides),
    as floats, in that order: the values :func:`clustered_compare` averages and resamples."""
    if keys is None:
        keys = sorted(q for q in a.keys() & b.keys() if len(a[q]) and len(b[q]))  # type: ignore[type-var]
    return [sum(1 for x in a[q] if x) / len(a[q]) - sum(1 for x in b[q] if x) / len(b[q]) for q in keys]


def clustered_bootstrap_means(
    a: Mapping[Hashable, Sequence[bool]],
    b: Mapping[Hashable, Sequence[bool]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float]:
    """The sorted bootstrap means behind ``clustered_compare(a, b).diff_ci`` (questions resampled, d_q kept
    whole), for checking the interval."""
    return bootstrap_means(question_differences(a, b), resamples, seed)


def by_question(results: Mapping[tuple[Hashable, Hashable], bool]) -> dict[Hashable, list[bool]]:
    """``{(seed, question): correct}`` → ``{question: [correct per seed]}`` (the order of a question's outcomes
    changes nothing: only their mean counts)."""
    out: dict[Hashable, list[bool]] = {}
    for (_seed, q), ok in results.items():
        out.setdefault(q, []).append(bool(ok))
    return out


def by_question_from_seeds(per_seed: Iterable[Mapping[Hashable, bool]]) -> dict[Hashable, list[bool]]:
    """A list of per-seed ``{question: correct}`` → ``{question: [correct per seed, in list order]}``; pass a
    deterministic evaluation as a one-element list."""
    out: dict[Hashable, list[bool]] = {}
    for results in per_seed:
        for q, ok in results.items():
            out.setdefault(q, []).append(bool(ok))
    return out


def clustered_compare_pooled(
    results_a: Mapping[tuple[Hashable, Hashable], bool],
    results_b: Mapping[tuple[Hashable, Hashable], bool],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Clustered:
    """The study's call: :func:`clustered_compare` of ``{(seed, question id): correct}`` dicts, grouped by
    question id. The seeds of a and b need not match: a deterministic run (zero-shot) is passed once per
    question, e.g. ``{(0, q): ok}``, not once per seed (the caller removes the repeats)."""
    return clustered_compare(by_question(results_a), by_question(results_b), resamples=resamples, seed=seed)


def one_outcome(results: Mapping[Hashable, bool]) -> dict[Hashable, list[bool]]:
    """``{question: correct}`` of one evaluation → the one-seed form :func:`clustered_compare` takes."""
    return {q: [bool(ok)] for q, ok in results.items()}


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
