"""The selection rules of ``filters.select`` beside the paper's rep-2: ``random`` (the control) and
``gold_likelihood`` (by the stored score); their fingerprints, the study's seed, and what each rule throws away
(correct vs incorrect paths, :func:`engine.filtering.explore.removal_step`)."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest

from engine.config import FiltersConfig, config_from_dict
from engine.filtering import rules as filters
from engine.filtering.explore import SAME_RATE, removal_step
from engine.filtering.rules import PathInput, QuestionInput

REASONING = (
    " Frost forms when the ground cools below freezing overnight, and many universities hold their "
    "commencement ceremonies in early spring when cold mornings are common."
)


def _path(i, rep2=0.1, gold_logp=None, branch=None, sample=0, tokens=30):
    return PathInput(i, branch if branch is not None else i, sample, REASONING, tokens, rep2, 8.0, None, gold_logp)


def _selected(paths, cfg, qid=1):
    results = filters.judge_question(paths, QuestionInput("Is it common?", "yes", None, qid), cfg)
    return [r for r in results if r.selected], {r.id: r.verdicts["selection"] for r in results}


# -- random ----------------------------------------------------------------------------------------------------


def test_random_is_a_pure_function_of_seed_and_question() -> None:
    paths = [_path(i, rep2=0.01 * i) for i in range(1, 7)] + [_path(9, tokens=3)]  # 9 fails the length rule
    cfg = FiltersConfig(select="random", seed=7)
    [first], verdicts = _selected(paths, cfg)
    shuffled = paths[:]
    random.Random(0).shuffle(shuffled)
    assert [r.id for r in _selected(shuffled, cfg)[0]] == [first.id]  # the input order does not matter
    assert [r.id for r in _selected(paths, cfg)[0]] == [first.id]  # re-applied: the same pick
    assert verdicts[first.id] == {"pass": True, "reason": "random pick among 6 surviving paths (seed 7)"}
    other = next(i for i in verdicts if i not in (first.id, 9))
    assert verdicts[other]["pass"] is False and verdicts[other]["reason"].endswith("was picked at random (seed 7)")
    assert verdicts[9] == {"pass": False, "reason": "did not pass the filters"}
    # the index is random.Random's on the survivors in branch/sample/id order
    assert first.id == sorted(p.id for p in paths if p.id != 9)[filters.random_pick(6, 7, 1)]


def test_random_is_uniform_and_the_seed_moves_it() -> None:
    picks = Counter(filters.random_pick(4, 0, q) for q in range(4000))
    assert set(picks) == {0, 1, 2, 3} and all(900 < n < 1100 for n in picks.values())
    # one question, seeds 0..3999: uniform too, and the seed changes the pick
    assert all(900 < n < 1100 for n in Counter(filters.random_pick(4, s, 5) for s in range(4000)).values())
    paths = [_path(i) for i in range(1, 6)]
    seeds = {_selected(paths, FiltersConfig(select="random", seed=s))[0][0].id for s in range(20)}
    assert len(seeds) > 1
    # the pick ignores rep-2: a rule that always took the lowest would give one id
    assert {_selected(paths, FiltersConfig(select="random"), qid=q)[0][0].id for q in range(30)} == {1, 2, 3, 4, 5}


# -- gold_likelihood -------------------------------------------------------------------------------------------


def test_gold_likelihood_keeps_the_highest_stored_score() -> None:
    paths = [_path(1, rep2=0.01, gold_logp=-9.0), _path(2, rep2=0.2, gold_logp=-3.21), _path(3, gold_logp=None)]
    [best], verdicts = _selected(paths, FiltersConfig(select="gold_likelihood"))
    assert best.id == 2
    assert verdicts[2]["reason"] == "highest gold log-likelihood (-3.210) of 3 surviving paths"
    assert verdicts[1]["reason"] == "branch 2 sample 0 was kept (gold log-likelihood -3.210 vs -9.000)"
    assert verdicts[3]["reason"] == "branch 2 sample 0 was kept (gold log-likelihood -3.210 vs none)"
    # unscored paths rank below every scored one; among unscored ones, rep-2 then branch decides
    [only] = _selected(
        [_path(4, rep2=0.05), _path(5, rep2=0.02), _path(6, gold_logp=-40.0)], FiltersConfig(select="gold_likelihood")
    )[0]
    assert only.id == 6
    assert _selected([_path(4, rep2=0.05), _path(5, rep2=0.02)], FiltersConfig(select="gold_likelihood"))[0][0].id == 5


def test_rep2_stays_the_default_and_combines_with_require_correct() -> None:
    assert FiltersConfig().select == "rep2" and FiltersConfig().seed == 0
    wrong = PathInput(1, 0, 0, REASONING + " So the answer is no.", 30, 0.01, 8.0)
    right = PathInput(2, 1, 0, REASONING + " So the answer is yes.", 30, 0.1, 8.0, None, -50.0)
    for select in ("rep2", "confidence", "random", "gold_likelihood"):
        cfg = FiltersConfig(select=select, require_correct=True)
        assert [r.id for r in _selected([wrong, right], cfg)[0]] == [2]


def test_the_config_help_names_every_rule_and_its_source() -> None:
    help_text = FiltersConfig.model_fields["select"].description or ""
    for words in (
        "rep2",
        "the paper",
        "confidence",
        "Wang & Zhou 2024",
        "random",
        "control",
        "gold_likelihood",
        "LaTRO",
    ):
        assert words in help_text
    assert "filters.seed" in help_text


# -- fingerprints and the study --------------------------------------------------------------------------------


def test_the_seed_enters_the_fingerprint_only_where_it_matters() -> None:
    from engine.filtering.stage import filter_fingerprint
    from engine.jobs import fingerprint

    def fp(**section):
        return filter_fingerprint(config_from_dict({"data": {"dataset": "sqa"}, "filters": section}), 7)

    old = {"min_tokens": 25, "max_rep2": 0.2, "min_perplexity": 5.0, "require_correct": False}
    assert fp() == fingerprint("filter", {"filters": old, "parent": 7})  # existing jobs keep their fingerprint
    assert fp(select="gold_likelihood") == fingerprint(
        "filter", {"filters": {**old, "select": "gold_likelihood"}, "parent": 7}
    )
    assert fp(select="random") == fingerprint(
        "filter", {"filters": {**old, "select": "random", "seed": 0}, "parent": 7}
    )
    assert len({fp(select="random", seed=s) for s in range(3)}) == 3
    assert fp(seed=3) != fp()  # a non-default seed is a setting like any other


def test_a_study_cell_sets_the_random_seed() -> None:
    from engine.pipeline.study import cell_config

    base = config_from_dict({"data": {"dataset": "sqa"}, "filters": {"select": "random"}})
    assert cell_config(base, "sqa", 3).filters.seed == 3
    rep2 = config_from_dict({"data": {"dataset": "sqa"}})
    assert cell_config(rep2, "sqa", 3).filters.seed == 0  # other rules read no seed: their jobs stay as they were


def test_filter_stage_random_picks_the_same_path_when_re_applied(engine, sqa) -> None:
    from sqlmodel import select

    from db.models import Job, Path
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.filtering.stage import refilter
    from engine.jobs import create_job
    from engine.pipeline import run_stage
    from engine.sampling.stage import sample_fingerprint

    def config(**section):
        return config_from_dict({"data": {"dataset": "sqa", "train_limit": 6}, "filters": section})

    base = config()
    job = create_job(
        engine, "sample", base.model_dump(mode="json"), fp=sample_fingerprint(base, sqa), dataset_id=sqa.id
    )
    with session_scope(engine) as s:
        for q in split_questions(s, sqa.id, "train", 6):
            rows = [
                dict(branch=b, sample=0, text=REASONING, tokens=30, rep2=0.01 * b, perplexity=9.0) for b in range(5)
            ]
            write_question_paths(s, job.id, q.id, rows)
        s.get(Job, job.id).status = "completed"

    def picks():
        with session_scope(engine) as s:
            return s.exec(select(Path.question_id, Path.branch).where(Path.job_id == job.id, Path.selected)).all()

    [first] = run_stage(engine, config(select="random", seed=11), "filter", print)
    chosen = sorted(picks())
    assert len(chosen) == 6 and {b for _q, b in chosen} != {0}
    run_stage(engine, base, "filter", print)
    assert {b for _q, b in picks()} == {0}
    again = refilter(engine, job.id, FiltersConfig(select="random", seed=11), print)
    assert sorted(picks()) == chosen and again.id == first.id  # reused: its own verdicts are shown again


# -- what each rule throws away ---------------------------------------------------------------------------------


def test_removal_step_counts_and_shares() -> None:
    def r(correct):
        return SimpleNamespace(correct=correct)

    before = [r(True), r(True), r(False), r(None), r(True), r(False)]
    kept = [before[0], before[2]]
    step = removal_step(before, kept)
    # removed: True, None (no answer: incorrect), True, False
    assert step == {
        "removed_correct": 2,
        "removed_incorrect": 2,
        "correct_share_removed": 0.5,
        "correct_share_kept": 0.5,
    }
    assert removal_step(before, before)["correct_share_removed"] is None  # nothing removed
    assert removal_step(before, [])["correct_share_kept"] is None
    assert "selects nothing" in SAME_RATE and "without a parsed answer counts as incorrect" in SAME_RATE


@pytest.mark.parametrize("select", ["rep2", "random"])
def test_the_selection_line_counts_the_survivors_not_selected(select) -> None:
    from engine.filtering.explore import count_survivors
    from engine.filtering.rules import judge_inputs

    right, wrong = REASONING + " So the answer is yes.", REASONING + " So the answer is no."
    inputs = {
        1: (
            QuestionInput("Q1?", "yes", None, 1),
            [
                PathInput(1, 0, 0, right, 30, 0.01, 8.0),
                PathInput(2, 1, 0, wrong, 30, 0.02, 8.0),
                PathInput(3, 2, 0, REASONING, 30, 0.03, 8.0),
                PathInput(4, 3, 0, right, 3, 0.0, 8.0),
            ],
        ),
    }
    cfg = FiltersConfig(select=select)
    results, _ = judge_inputs(inputs, cfg, filters.AnswerSpec())
    counts = count_survivors(results, cfg, filters.rules_in_order(cfg), 1, 1)
    length = next(s for s in counts["rules"] if s["rule"] == "length")
    assert (length["removed"], length["removed_correct"], length["removed_incorrect"]) == (1, 1, 0)
    assert length["correct_share_removed"] == 1.0 and length["correct_share_kept"] == pytest.approx(1 / 3)
    sel = counts["selection"]
    assert sel["rule"] == "selection" and sel["select"] == select
    assert sel["removed"] == 2 and sel["paths_left"] == 1
    assert sel["removed_correct"] + sel["removed_incorrect"] == 2
    if select == "rep2":  # the lowest rep-2 is the correct path 1; the other two (no answer, wrong) go
        assert (sel["removed_correct"], sel["correct_share_removed"], sel["correct_share_kept"]) == (0, 0.0, 1.0)
