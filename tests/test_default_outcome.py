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


def test_the_outcome_sets_sert_beside_the_most_common_answer(engine, sqa):
    """A yes/no set where SERT only learned to say the common answer beats a zero-shot model that never formats
    its answer; the outcome says what always giving that answer scores, paired on the same questions."""
    from sqlmodel import select

    from db.models import Question
    from db.session import session_scope
    from engine.evaluation.stats import majority

    with session_scope(engine) as s:
        golds = s.exec(
            select(Question.answer).where(Question.dataset_id == sqa.id, Question.split == "test").order_by(Question.id)
        ).all()[:20]
    answer, count, n = majority(golds)
    assert n == 20 and 10 <= count < 20
    parrot = [g.strip().lower() == answer for g in golds]  # right exactly where the gold is the common answer
    make_evaluation(engine, sqa.id, "zero-shot", [False] * 20)
    make_evaluation(engine, sqa.id, "SERT", parrot)
    means = outcome_lines(engine, "sqa")[2]
    assert "SERT beat zero-shot" in means
    assert f"Answering {answer!r} to every question would score {100 * count / 20:.1f} [" in means
    assert "SERT - that +0.0 points [+0.0, +0.0]: not above it, so much of SERT's gain over zero-shot" in means

    make_evaluation(engine, sqa.id, "SERT", [True] * 20)  # newer: every answer right
    c = clustered_compare({i: [True] for i in range(20)}, {i: [p] for i, p in enumerate(parrot)})
    means = outcome_lines(engine, "sqa")[2]
    assert f"SERT - that {100 * c.diff:+.1f} points [{100 * c.diff_ci[0]:+.1f}, " in means and "above it too" in means


def test_the_default_loop_generates_the_task_its_dataset_names():
    """``data.dataset`` in the default config picks the reasoning-gym task when it names one."""
    from engine.data.generate import DEFAULT_TASK, available_tasks
    from engine.pipeline.processes import DEFAULT_DATASET, dataset_task

    tasks = available_tasks()
    assert DEFAULT_DATASET == DEFAULT_TASK == "syllogism" and DEFAULT_TASK in tasks
    assert dataset_task("letter_counting", tasks) == "letter_counting"
    assert dataset_task("my own name", tasks) == DEFAULT_TASK
