"""The comparison statistics against published and hand-computed cases."""

from __future__ import annotations

import pytest

from engine.evaluation.stats import (
    fmt_interval,
    majority,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap_ci,
    paired_compare,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [  # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe(correct: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_at_200_questions_is_about_seven_points() -> None:
    lo, hi = wilson_interval(105, 200)
    assert 0.065 < (hi - lo) / 2 < 0.07


def test_mcnemar_exact_against_a_hand_count() -> None:
    # 10 discordant questions, 2 won by a: P(X <= 2) = (1 + 10 + 45) / 1024, two-sided doubles it
    assert mcnemar_exact(2, 8) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_compare_counts_only_common_questions() -> None:
    a = {1: True, 2: True, 3: False, 4: True, 5: False}
    b = {1: True, 2: False, 3: False, 4: False, 6: True}
    p = paired_compare(a, b, resamples=500)
    assert p.n == 4 and (p.a_only, p.b_only) == (2, 0)
    assert p.diff == pytest.approx(0.75 - 0.25)
    assert p.diff_ci[0] <= p.diff <= p.diff_ci[1]
    assert p.p_value == pytest.approx(0.5)


def test_paired_bootstrap_is_seeded_and_degenerate_cases() -> None:
    a = [True] * 30 + [False] * 20
    b = [True] * 20 + [False] * 30
    assert paired_bootstrap_ci(a, b) == paired_bootstrap_ci(a, b)
    lo, hi = paired_bootstrap_ci(a, b)
    assert 0 < lo < 0.2 < hi <= 0.4  # b is a's first 20 right: the difference is 10 of 50, always >= 0
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([True], [True, False])


def test_majority_and_formatting() -> None:
    assert majority(["no", "yes", "No ", "no"]) == ("no", 3, 4)
    assert majority(["a", "b"]) == ("a", 1, 2)  # ties: stable choice
    assert majority([]) == (None, 0, 0)
    assert fmt_interval(0.525, (0.456, 0.593)) == "52.5 [45.6, 59.3]"
    assert fmt_interval(None, None) == "-"
    assert mean_sd([0.5]) == (0.5, 0.0)
    m, sd = mean_sd([0.4, 0.6])
    assert m == pytest.approx(0.5) and sd == pytest.approx(0.1414213, abs=1e-6)
