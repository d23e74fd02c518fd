"""What the default loop says when it ends (engine.pipeline.rounds.outcome_lines): what was trained, SERT -
zero-shot on the same questions with its paired interval, what that can mean at this size, where to go next."""

from __future__ import annotations

import pytest

from engine.evaluation.stats import clustered_compare
from engine.pipeline.rounds import outcome_lines
from tests.conftest import make_evaluation


def test_the_outcome_says_what_the_paired_interval_says(engine, sqa):
    assert outcome_lines(engine, "sqa") == ["no completed SERT and zero-shot evaluations of 'sqa' to compare yet"]
    sert = [True] * 14 + [False] * 6
    zero = [True] * 2 + [False] * 18
    make_evaluation(engine, sqa.id, "zero-shot", zero)
    make_evaluation(engine, sqa.id, "SERT", sert)
    make_evaluation(engine, sqa.id, "SERT", [False] * 20, status="failed")  # newer, failed: never read
    lines = outcome_lines(engine, "sqa")
    c = clustered_compare({i: [x] for i, x in enumerate(sert)}, {i: [x] for i, x in enumerate(zero)})
    assert c.diff_ci[0] > 0
    assert lines[0].startswith("What was trained: the bundled student, self-trained (SERT)")
    assert (
        f"SERT - zero-shot {100 * c.diff:+.1f} points [{100 * c.diff_ci[0]:+.1f}, {100 * c.diff_ci[1]:+.1f}]"
        in lines[1]
    )
    assert "on the same 20 test questions: SERT 70.0 [" in lines[1]
    assert "SERT beat zero-shot on these questions: the interval lies above 0." in lines[2]
    assert lines[3].startswith("Where to go next:") and "review queue" in lines[3]


@pytest.mark.parametrize(
    ("sert", "zero", "says"),
    [
        ([True] * 6 + [False] * 14, [True] * 5 + [False] * 15, "the interval holds 0"),
        ([False] * 20, [True] * 12 + [False] * 8, "SERT did worse than zero-shot"),
    ],
)
def test_the_outcome_does_not_claim_what_the_interval_does_not_hold(engine, sqa, sert, zero, says):
    make_evaluation(engine, sqa.id, "zero-shot", zero)
    make_evaluation(engine, sqa.id, "SERT", sert)
    assert says in outcome_lines(engine, "sqa")[2]
