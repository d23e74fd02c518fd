"""The comparison clustered by question (DESIGN.md section 6) against hand counts, McNemar and numpy."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from engine.evaluation import stats
from engine.evaluation.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_means,
    by_question,
    by_question_from_seeds,
    clustered_bootstrap_means,
    clustered_compare,
    clustered_compare_pooled,
    mcnemar_exact,
    one_outcome,
    paired_bootstrap_ci,
    paired_compare,
    percentile_interval,
    sign_flip_p,
)


def _one_seed(pattern_a: str, pattern_b: str) -> tuple[dict[int, bool], dict[int, bool]]:
    """Two one-seed runs from strings of 1/0, one character per question."""
    return ({q: c == "1" for q, c in enumerate(pattern_a)}, {q: c == "1" for q, c in enumerate(pattern_b)})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1111111111", "0000000000"),  # 10 discordant, all a
        ("1100000000", "0011111111"),  # 2 vs 8
        ("1110001110", "1001110110"),  # 3 vs 3: p = 1
        ("1111111000", "1111111000"),  # no discordant question: p = 1
        ("101", "010"),  # 2 vs 1
        ("1" * 30 + "0" * 10, "1" * 20 + "0" * 16 + "1" * 4),  # report compare's hand case: 10 vs 4
    ],
)
def test_one_seed_is_exact_mcnemar_and_the_paired_bootstrap(a: str, b: str) -> None:
    ra, rb = _one_seed(a, b)
    c = clustered_compare(one_outcome(ra), one_outcome(rb))
    p = paired_compare(ra, rb)
    assert (c.a_only, c.b_only) == (p.a_only, p.b_only)
    assert c.p_value == mcnemar_exact(p.a_only, p.b_only)  # exactly, not approximately
    assert c.test == "mcnemar" and (c.seeds_a, c.seeds_b) == (1, 1)
    assert (c.n, c.acc_a, c.acc_b) == (p.n, p.acc_a, p.acc_b) and c.diff == pytest.approx(p.diff, abs=1e-15)
    assert c.diff_ci == p.diff_ci  # the same resamples of the same differences


def test_seeds_repeating_one_outcome_read_as_one_seed() -> None:
    ra, rb = _one_seed("1" * 30 + "0" * 10, "1" * 20 + "0" * 16 + "1" * 4)
    once = clustered_compare(one_outcome(ra), one_outcome(rb))
    thrice = clustered_compare({q: [ok] * 3 for q, ok in ra.items()}, {q: [ok] * 3 for q, ok in rb.items()})
    assert (thrice.n, thrice.diff, thrice.diff_ci, thrice.p_value) == (once.n, once.diff, once.diff_ci, once.p_value)
    assert (thrice.a_only, thrice.b_only, thrice.seeds_a) == (once.a_only, once.b_only, 3)
    # The same study pooled as (seed, question) pairs: still 40 questions, not 120 independent pairs.
    pooled = clustered_compare_pooled(
        {(s, q): ok for s in range(3) for q, ok in ra.items()}, {(s, q): ok for s in range(3) for q, ok in rb.items()}
    )
    assert (pooled.n, pooled.diff, pooled.diff_ci, pooled.p_value) == (40, once.diff, once.diff_ci, once.p_value)
    assert (
        pooled.p_value
        > paired_compare(
            {(s, q): ok for s in range(3) for q, ok in ra.items()},
            {(s, q): ok for s in range(3) for q, ok in rb.items()},
        ).p_value
    )  # what pooling pairs as independent claimed


def test_fractional_differences_against_all_sign_patterns_by_hand() -> None:
    # Three seeds of a against a deterministic b (one outcome per question, zero-shot style).
    a = {"q1": [True, True, True], "q2": [True, True, False], "q3": [True, False, False], "q4": [False] * 3}
    b = {"q1": [False], "q2": [False], "q3": [True], "q4": [False], "q5": [True]}  # q5: only b answered it
    c = clustered_compare(a, b)
    # d = 1, 2/3, 1/3 - 1 = -2/3, 0 over n = 4 questions
    assert c.n == 4 and (c.a_only, c.b_only) == (2, 1)
    assert c.diff == pytest.approx((1 + 2 / 3 - 2 / 3 + 0) / 4)
    assert c.acc_a == pytest.approx((1 + 2 / 3 + 1 / 3 + 0) / 4) and c.acc_b == pytest.approx(1 / 4)
    # the 2^3 sign patterns of the non-zero d (1, 2/3, 2/3): |sum| >= |1 + 2/3 - 2/3| = 1
    d = [Fraction(1), Fraction(2, 3), Fraction(-2, 3)]
    sums = [abs(sum(s * x for s, x in zip(signs, d, strict=True))) for signs in itertools.product((1, -1), repeat=3)]
    assert sorted(sums) == [Fraction(1, 3)] * 2 + [Fraction(1)] * 4 + [Fraction(7, 3)] * 2
    assert c.p_value == 6 / 8 and c.test == "exact"
    # The zero d_q (q4) counts in n and the mean, not in the permutations; adding zeros changes no p-value.
    assert sign_flip_p([*d, 0, 0]) == sign_flip_p(d) == (0.75, "exact")


def test_sign_flip_small_cases() -> None:
    assert sign_flip_p([]) == (1.0, "mcnemar") and sign_flip_p([0, 0]) == (1.0, "mcnemar")
    # one d = 1/2: the two patterns +-1/2 both reach |1/2|
    assert sign_flip_p([Fraction(1, 2)]) == (1.0, "exact")
    # d = 1, 1, 1/3, 1/3: 16 patterns, |sum| >= 8/3 only for all-plus and all-minus
    assert sign_flip_p([1, 1, Fraction(1, 3), Fraction(1, 3)]) == (2 / 16, "exact")


def test_the_three_ways_of_the_sign_flip_test_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    d = [Fraction(rng.randint(-3, 3), 3) + Fraction(rng.randint(0, 1), 2) for _ in range(14)]
    counted, how = sign_flip_p(d)
    assert how == "exact"
    monkeypatch.setattr(stats, "EXACT_COUNT_CELLS", 0)  # the listing of every pattern
    assert sign_flip_p(d) == (counted, "exact")
    monkeypatch.setattr(stats, "EXACT_FLIPS_MAX", 0)  # random flips: within Monte Carlo error
    p, how = sign_flip_p(d)
    assert how == "random" and abs(p - counted) < 4 * math.sqrt(counted * (1 - counted) / stats.RANDOM_FLIPS) + 1e-4
    assert sign_flip_p(d) == (p, "random")  # seeded


def _fractional_study(seed: int = 7, n: int = 60) -> tuple[dict[int, list[bool]], dict[int, list[bool]]]:
    rng = random.Random(seed)
    a = {q: [rng.random() < 0.6 for _ in range(rng.choice((3, 4, 5)))] for q in range(n)}
    b = {q: [rng.random() < 0.5 for _ in range(3)] for q in range(n)}
    return a, b


def _assert_interval_is_numpy_percentiles(means: list[float], ci: tuple[float, float]) -> None:
    arr = np.asarray(means)
    r = len(means)
    lo_i, hi_i = math.floor(0.025 * (r - 1)), math.ceil(0.975 * (r - 1))
    # the data must tell the indices apart, or an off-by-one would pass unseen
    assert len({means[lo_i - 1], means[lo_i], means[lo_i + 1]}) == 3
    assert len({means[hi_i - 1], means[hi_i], means[hi_i + 1]}) == 3
    assert ci == (float(np.percentile(arr, 2.5, method="lower")), float(np.percentile(arr, 97.5, method="higher")))
    assert ci == (means[lo_i], means[hi_i])


def test_clustered_interval_is_numpy_percentiles_of_its_resamples() -> None:
    a, b = _fractional_study()
    c = clustered_compare(a, b)
    means = clustered_bootstrap_means(a, b)
    assert len(means) == BOOTSTRAP_RESAMPLES and means == sorted(means)
    # the resamples are questions drawn with replacement, each d_q whole
    d = [sum(a[q]) / len(a[q]) - sum(b[q]) / len(b[q]) for q in sorted(a)]
    rng = random.Random(BOOTSTRAP_SEED)
    again = sorted(sum(rng.choices(d, k=len(d))) / len(d) for _ in range(BOOTSTRAP_RESAMPLES))
    assert means == again
    _assert_interval_is_numpy_percentiles(means, c.diff_ci)
    assert c.diff_ci[0] <= c.diff <= c.diff_ci[1]


def test_paired_interval_is_numpy_percentiles_of_its_resamples() -> None:
    rng = random.Random(11)  # many questions, few resamples: neighbouring resample means differ in the tails
    a = [rng.random() < 0.6 for _ in range(4000)]
    b = [rng.random() < 0.5 for _ in range(4000)]
    means = bootstrap_means([int(x) - int(y) for x, y in zip(a, b, strict=True)], resamples=403)
    _assert_interval_is_numpy_percentiles(means, paired_bootstrap_ci(a, b, resamples=403))
    assert percentile_interval(means, level=0.5) == (
        float(np.percentile(means, 25, method="lower")),
        float(np.percentile(means, 75, method="higher")),
    )


def test_grouping_helpers_and_empty_cases() -> None:
    assert by_question({(0, "x"): True, (1, "x"): False, (0, "y"): True}) == {"x": [True, False], "y": [True]}
    assert by_question_from_seeds([{"x": True}, {"x": False, "y": True}]) == {"x": [True, False], "y": [True]}
    empty = clustered_compare({}, {"x": [True]})
    assert (empty.n, empty.diff, empty.diff_ci, empty.p_value) == (0, 0.0, (-1.0, 1.0), 1.0)
    assert clustered_compare({"x": []}, {"x": [True]}).n == 0  # no outcome on one side: left out
