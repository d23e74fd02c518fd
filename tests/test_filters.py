"""The filter rules with hand-computed values, and the pass over one question's paths."""

from __future__ import annotations

import pytest

from engine.config import FiltersConfig
from engine.filtering import rules as filters
from engine.filtering.rules import AnswerSpec, PathInput, QuestionInput

CSQA_CHOICES = ["ignore", "enforce", "authoritarian", "yell at", "avoid"]
REASONING = (
    " Frost forms when the ground cools below freezing overnight, and many universities hold their "
    "commencement ceremonies in early spring when cold mornings are still common in northern states."
)


# -- rep-2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([1, 2, 1, 2, 1, 2], 0.6),  # (1,2),(2,1),(1,2),(2,1),(1,2): 2 distinct of 5
        ([1, 2, 3, 4, 5], 0.0),  # 4 distinct of 4
        ([7, 7, 7, 7], 2 / 3),  # (7,7) x3: 1 distinct of 3
        ([1, 2, 3, 1, 2], 0.25),  # (1,2),(2,3),(3,1),(1,2): 3 distinct of 4
        ([5], 0.0),  # no bigram
        ([], 0.0),
    ],
)
def test_rep2_hand_computed(ids, expected):
    assert filters.rep2(ids) == pytest.approx(expected)


# -- length, repetition, perplexity ----------------------------------------------------------------------
def test_length_threshold_is_inclusive():
    assert filters.length_verdict(25, 25).passed
    v = filters.length_verdict(12, 25)
    assert not v.passed and v.reason == "12 tokens < 25"


def test_repetition_drops_only_above_threshold():
    assert filters.repetition_verdict(0.20, 0.20).passed
    assert filters.repetition_verdict(0.0, 0.20).passed
    v = filters.repetition_verdict(0.6, 0.20)
    assert not v.passed and v.reason == "rep-2 0.600 > 0.2"
    assert not filters.repetition_verdict(None, 0.2).passed


def test_perplexity_drops_fluent_trivial_text():
    # mean log-prob -1.0 -> perplexity e^1 = 2.718 < 5: dropped; mean -2.0 -> 7.389: kept.
    import math

    assert not filters.perplexity_verdict(math.exp(1.0), 5.0).passed
    assert filters.perplexity_verdict(math.exp(2.0), 5.0).passed
    assert filters.perplexity_verdict(5.0, 5.0).passed  # "below 5" drops, exactly 5 stays
    v = filters.perplexity_verdict(4.99, 5.0)
    assert not v.passed and v.reason == "perplexity 4.99 < 5"
    assert not filters.perplexity_verdict(None, 5.0).passed


# -- pattern ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "reason_start"),
    [
        (" Yes.\n\nQuestion: Is the sky blue?\nAnswer: Yes.", 'imitates the prompt ("Question: ... Answer:")'),
        (" no. question: what about dogs? answer: no", 'imitates the prompt ("Question: ... Answer:")'),
        (" It depends on the weather in spring.\nQuestion: Do dogs bark at the moon at night?", "starts a new"),
        (" Frost is common in the north.\nQ: Do cats fly over tall mountains?\nA: No", 'starts a new "Q:"'),
        (" Answer: yes, because frost is common on cold spring mornings in the north.", 'repeats "Answer:"'),
        (" The facts say frost. Answer choices: (A) yes (B) no", 'repeats "Answer choices:"'),
        (" Frost forms on cold nights in the north.\nQuestion 2: Do owls hunt at night?", 'starts a new "Question:"'),
    ],
)
def test_pattern_drops_prompt_imitation(text, reason_start):
    v = filters.pattern_verdict(text)
    assert not v.passed
    assert v.reason.startswith(reason_start)


@pytest.mark.parametrize(
    "text",
    [
        " Yes.",
        " No",
        " yes",
        " (B)",
        " B",
        " 42",
        " The answer is yes.",
        " So the answer is (B).",
        " Yes, it is.",
        " No, definitely not!",
        " The answer is 42.",
        " Yes. Yes. Yes. Yes. Yes. Yes. Yes. Yes. Yes. Yes.",
        " True",
        " ...",
    ],
)
def test_pattern_drops_bare_answers(text):
    v = filters.pattern_verdict(text)
    assert not v.passed
    assert v.reason.startswith("bare answer")


def test_bare_answer_counts_words_besides_answer_and_filler():
    assert filters.bare_answer_left(" The answer is (B) enforce.", CSQA_CHOICES) == []
    assert filters.bare_answer_left(" Yes, frost happens.", None) == ["frost", "happens"]
    # Two content words are still a bare answer; three make a (short) reason.
    assert not filters.pattern_verdict(" Yes, frost happens.").passed
    assert filters.pattern_verdict(" Yes, frost happens often.").passed
    # An option text with its letter is an answer, not reasoning.
    v = filters.pattern_verdict(" (B) enforce", CSQA_CHOICES)
    assert not v.passed and v.reason.startswith("bare answer")


@pytest.mark.parametrize(
    ("text", "choices"),
    [
        (" (A) ignore, (B) enforce, (C) authoritarian, (D) yell at, (E) avoid.", CSQA_CHOICES),
        (" ignore, enforce, authoritarian, yell at, or avoid", CSQA_CHOICES),
        (" (A) ignore (B) enforce (C) authoritarian", CSQA_CHOICES),
        (" (A) Yes (B) No (C) Maybe", None),  # an invented option list on a yes/no question
    ],
)
def test_pattern_drops_repeated_option_list(text, choices):
    v = filters.pattern_verdict(text, choices)
    assert not v.passed
    assert v.reason.startswith("repeats the option list"), v.reason


def test_option_list_share_counts():
    named, share = filters.option_list_share(" (A) ignore, (B) enforce, because they did it", CSQA_CHOICES)
    assert named == 2
    # Words: a ignore b enforce because they did it; the list is a ignore b enforce: 4 of 8, not "mostly".
    assert share == pytest.approx(4 / 8)
    assert filters.pattern_verdict(" (A) ignore, (B) enforce, because they did it", CSQA_CHOICES).passed
    # a ignore b enforce or e avoid it: all but "it" belong to the list ("or" joins it): 7 of 8.
    named, share = filters.option_list_share(" (A) ignore, (B) enforce, or (E) avoid it", CSQA_CHOICES)
    assert (named, share) == (3, pytest.approx(7 / 8))


@pytest.mark.parametrize(
    ("text", "choices"),
    [
        (REASONING, None),
        (" Yes." + REASONING, None),
        (
            " The school made efforts to change, and sanctions that punish it would make people ignore those "
            "efforts rather than enforce or avoid them, so (A) fits best.",
            CSQA_CHOICES,
        ),
        (" Questions about weather depend on the place, and frost is common in spring up north.", None),
        # the words of the prompt inside a sentence are not its structure
        (" Let me restate the question: is frost common at spring graduations? In the north it often is.", None),
        (
            " Among the answer choices, enforce fits best because sanctions make people follow the rules.",
            CSQA_CHOICES,
        ),
    ],
)
def test_pattern_keeps_reasoning(text, choices):
    v = filters.pattern_verdict(text, choices)
    assert v.passed, v.reason


def test_empty_text_fails_pattern():
    assert filters.pattern_verdict("   ").reason == "empty text"


# -- the pass over one question ----------------------------------------------------------------------------
def _path(i, text=REASONING, tokens=30, rep2=0.1, ppl=8.0, branch=None, sample=0):
    return PathInput(i, branch if branch is not None else i, sample, text, tokens, rep2, ppl)


QUESTION = QuestionInput("Is it common to see frost during some college commencements?", "yes")


def test_judge_records_every_verdict_and_selects_lowest_rep2():
    paths = [
        _path(1, text=" Yes.", tokens=3, rep2=0.0, ppl=2.0),  # fails pattern, length, perplexity
        _path(2, tokens=12),  # fails length only
        _path(3, rep2=0.5),  # fails repetition only
        _path(4, ppl=3.0),  # fails perplexity only
        _path(5, rep2=0.15),  # survivor
        _path(6, rep2=0.05),  # survivor, lowest rep-2 -> selected
        _path(7, rep2=0.10),  # survivor
    ]
    results = filters.judge_question(paths, QUESTION, FiltersConfig())
    by_id = {r.id: r for r in results}
    for r in results:
        assert list(r.verdicts) == ["pattern", "length", "repetition", "perplexity", "selection"]
        assert all(set(v) == {"pass", "reason"} for v in r.verdicts.values())
    first = by_id[1].verdicts
    assert not first["pattern"]["pass"] and first["pattern"]["reason"].startswith("bare answer")
    assert first["length"] == {"pass": False, "reason": "3 tokens < 25"}
    assert first["repetition"] == {"pass": True, "reason": ""}  # a later rule still records its verdict
    assert not first["perplexity"]["pass"]
    assert [r.id for r in results if r.passed] == [5, 6, 7]
    assert [r.id for r in results if r.selected] == [6]
    assert by_id[6].verdicts["selection"]["reason"] == "lowest rep-2 (0.050) of 3 surviving paths"
    assert not by_id[5].verdicts["selection"]["pass"]
    # Answers are parsed for every path.
    assert by_id[1].answer == "yes" and by_id[1].correct is True
    assert by_id[2].answer is None and by_id[2].correct is False

    counts = filters.count_verdicts([(1, r.verdicts, r.selected) for r in results], filters.RULES)
    assert counts["removed"] == {"pattern": 1, "length": 1, "repetition": 1, "perplexity": 1}
    assert counts["failed"] == {"pattern": 1, "length": 2, "repetition": 1, "perplexity": 2}
    assert counts["paths"] == 7 and counts["questions"] == 1 and counts["selected"] == 1


def test_selection_tie_break_is_deterministic():
    paths = [_path(3, branch=2, sample=1), _path(1, branch=2, sample=0), _path(2, branch=1, sample=4)]
    for order in (paths, paths[::-1]):
        results = filters.judge_question(order, QUESTION, FiltersConfig())
        assert [r.id for r in results if r.selected] == [2]  # equal rep-2: lowest branch wins


def test_no_survivor_no_selection():
    results = filters.judge_question([_path(1, tokens=5), _path(2, rep2=0.9)], QUESTION, FiltersConfig())
    assert not any(r.selected for r in results)
    assert all(r.verdicts["selection"]["pass"] is False for r in results)


def test_thresholds_come_from_the_config():
    paths = [_path(1, tokens=12, rep2=0.3, ppl=3.0)]
    assert not filters.judge_question(paths, QUESTION, FiltersConfig())[0].passed
    loose = FiltersConfig(min_tokens=10, max_rep2=0.5, min_perplexity=2.0)
    assert filters.judge_question(paths, QUESTION, loose)[0].selected


def test_require_correct_is_optional_and_last():
    wrong = REASONING + " So the answer is no."
    right = REASONING + " So the answer is yes."
    paths = [_path(1, text=wrong, rep2=0.01), _path(2, text=right, rep2=0.1)]
    off = filters.judge_question(paths, QUESTION, FiltersConfig())
    assert "correctness" not in off[0].verdicts
    assert [r.id for r in off if r.selected] == [1]
    on = filters.judge_question(paths, QUESTION, FiltersConfig(require_correct=True))
    assert list(on[0].verdicts)[-2:] == ["correctness", "selection"]
    assert on[0].verdicts["correctness"] == {"pass": False, "reason": "answer 'no' != gold 'yes'"}
    assert [r.id for r in on if r.selected] == [2]


def test_choice_answers_use_the_dataset_letters():
    q = QuestionInput("pick one. Answer choices: (A) x, (B) y, (C) z", "C", ["x", "y", "z"])
    text = REASONING + " So the answer is (C)."
    [r] = filters.judge_question([_path(1, text=text)], q, FiltersConfig(), AnswerSpec("choice", "ABC"))
    assert r.answer == "C" and r.correct is True
