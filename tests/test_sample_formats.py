"""The text the student learns from, decided on real rows of ../shared/data (dataset, index) and on real
paths of the bundled student: the prompts, where a rationale's or a path's own answer is cut, and that the
evaluation parser reads the gold answer back from every training sample.

The rationales are text-davinci-002's, as released by the Fine-tune-CoT authors (``D_<task>.json``, key = the
sample index); the paths are what the bundled student sampled for the first two StrategyQA train questions
(sampling seed 1, 32 new tokens, the sample stage's defaults otherwise), copied here verbatim.
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from engine import answers, prompts
from engine.training import datasets as ds
from tests.conftest import SHARED_DATA, rt_files

TASKS = (
    "strategy_qa",
    "coin_flip",
    "tracking_shuffled_objects",
    "multiarith",
    "addsub",
    "single_eq",
    "last_letter_concatenation",
)


@cache
def questions(task: str) -> list[dict]:
    return json.loads(rt_files(task)[0].read_text())


@cache
def rationales(task: str) -> dict[str, list[dict]]:
    return json.loads((SHARED_DATA / "teacher-text-davinci-002" / f"D_{task}.json").read_text())["data"]


def rationale(task: str, index: int) -> str:
    return rationales(task)[str(index)][0]["reasoning_completion"]


# -- the prompts ----------------------------------------------------------------------------------------------
def test_student_and_teacher_prompts_put_no_period_after_end_punctuation():
    from engine.config import config_from_dict
    from engine.teacher.store import teacher_prompt, teacher_requests

    sqa = questions("strategy_qa")[0]["question"]  # "Is it common to see frost during some college commencements?"
    csqa = questions("commonsense_qa")[0]["question"]  # "... (D) yell at, (E) avoid."
    assert sqa.endswith("?") and csqa.endswith("avoid.")
    assert prompts.training_prompt(sqa) == f"Question: {sqa} Answer:"
    assert prompts.training_prompt(csqa) == f"Question: {csqa} Answer:"
    for q in (sqa, csqa):
        prompt = teacher_prompt(q)
        assert prompt == prompts.training_prompt(q) + " Let's think step by step."
        assert "?." not in prompt and ".." not in prompt
        # the distillation sample is the teacher's prompt followed by what the teacher wrote
        assert (prompts.training_prompt(q) + ds.distill_completion("R.", "yes")).startswith(prompt)
    [request] = teacher_requests(config_from_dict({}), sqa)
    assert request.prompt == f"Question: {sqa} Answer: Let's think step by step."
    assert teacher_prompt("Pick (A) x (B) y") == "Question: Pick (A) x (B) y. Answer: Let's think step by step."


def test_a_teacher_job_of_an_older_prompt_is_not_resumed(monkeypatch):
    from db.models import Dataset
    from engine.config import config_from_dict
    from engine.teacher import store

    cfg = config_from_dict({"teacher": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}})
    dataset = Dataset(id=1, name="sqa", task="strategy_qa", answer_type="yes_no", source="test")
    now = store.teacher_fingerprint(cfg, dataset)
    monkeypatch.setattr(store, "TEACHER_PROMPT_VERSION", store.TEACHER_PROMPT_VERSION - 1)
    assert store.teacher_fingerprint(cfg, dataset) != now


# -- where a rationale's own answer is cut ----------------------------------------------------------------------
def test_an_answer_stated_mid_reasoning_stays():
    # StrategyQA 170: two sub-questions answered on the way, then a conclusion the marker does not match
    text = rationale("strategy_qa", 170)
    assert text.count("The answer is") == 2
    assert ds.strip_stated_answer(text) == ds.clean(text)
    # StrategyQA 601 (cut off at 128 tokens): "The answer is: nothing." and two more sentences
    assert ds.strip_stated_answer(rationale("strategy_qa", 601)) == ds.clean(rationale("strategy_qa", 601))
    # StrategyQA 390: "The answer is yes, the stadium could house ..." and a paragraph more
    assert ds.strip_stated_answer(rationale("strategy_qa", 390)) == ds.clean(rationale("strategy_qa", 390))


@pytest.mark.parametrize(
    ("task", "index", "ending"),
    [
        # the last sentence starts with the marker: it goes
        ("strategy_qa", 22, "This is done by reciting a series of prayers and using a crucifix."),
        ("strategy_qa", 27, "This craton has had no volcanic activity for over a billion years."),
        ("multiarith", 112, "So we have 37 + 15 = 52."),
        # "..., so the answer is X.": the clause before "so" stays, with its period
        ("strategy_qa", 393, "Now, we need to compare the two numbers. 42,735 is greater than 27,687."),
        ("tracking_shuffled_objects", 5, "At the end of the game, Claire has the black ball."),
        # "So, if we think about it, the answer is yes - ...": another clause leads in, the sentence goes
        (
            "strategy_qa",
            574,
            "Heartworms are parasitic worms that live in the heart and lungs of dogs (and sometimes cats).",
        ),
    ],
)
def test_the_final_answer_sentence_is_cut(task, index, ending):
    text = rationale(task, index)
    cut = ds.strip_stated_answer(text)
    assert cut.endswith(ending), cut[-200:]
    assert ds.clean(text).startswith(cut[: len(cut) - len(ending)])
    assert not answers.MARKER_RE.search(cut[-len(ending) :])


def test_every_correct_recorded_rationale_gives_a_sample_the_parser_reads_as_gold():
    """All seven recorded tasks: the distillation sample of each rationale whose teacher answer is right
    parses back to the gold answer (2,000-odd samples; StrategyQA 505 reads "then the answer is probably no"
    before its gold "So the answer is yes.")."""
    checked = 0
    for task in TASKS:
        answer_type = answers.answer_type_for_task(task)
        letters = answers.TASK_CHOICE_LETTERS.get(task, "ABCDE")
        rows = questions(task)
        for key, records in rationales(task).items():
            record = records[0]
            gold = answers.normalize_gold(rows[int(key)]["answer"], answer_type)
            said = answers.parse_answer("Therefore, the answer is" + record["completion"], answer_type, letters)
            reasoning = ds.strip_stated_answer(record["reasoning_completion"])
            if not answers.is_correct(said, gold, answer_type) or not reasoning:
                continue
            completion = ds.distill_completion(reasoning, ds.answer_surface(gold, answer_type))
            parsed = answers.parse_answer(completion, answer_type, letters)
            assert answers.is_correct(parsed, gold, answer_type), (task, key, completion[-300:])
            checked += 1
    assert checked > 3000


def test_the_parser_reads_the_answer_sentence_not_a_hypothetical_before_it():
    text = rationale("strategy_qa", 505)
    assert "then the answer is probably no" in text and questions("strategy_qa")[505]["answer"] == "Yes"
    sample = ds.distill_completion(ds.strip_stated_answer(text), "yes")
    assert "then the answer is probably no" in sample  # its last sentence states no answer: nothing is cut
    assert answers.parse_answer(sample, "yes_no") == "yes"
    assert answers.parse_answer(ds.clean(text) + " So the answer is yes.", "yes_no") == "yes"
    # without a "So the answer is" the first other marker still counts (the recorded teacher completions)
    assert answers.parse_answer("then the answer is probably no, but yes", "yes_no") == "no"


# -- SERT: the path is the reasoning, the gold answer is appended -------------------------------------------------
# What the bundled student sampled for StrategyQA train question 2, "Would a pear sink in water?" (gold: no).
PEAR_OWN_ANSWER_LAST = " No, a pear would not sink in water.\nThe answer is: 3"
PEAR_ANSWER_FIRST = " \nThe answer is no. A pear is only a fruit that is a member of the pear fruit family."
PEAR_ONLY_AN_ANSWER = " \nThe answer is no, because a pear cannot be able to sink in water."
PEAR_MORE_AFTER = (
    " No, a pear will not sink in water.\n\nThe answer is no. \n\nPlease answer the question based on the text:\nA) "
)


def test_a_path_loses_its_own_final_answer_sentence():
    assert ds.sert_completion(PEAR_OWN_ANSWER_LAST, "no") == " No, a pear would not sink in water. So the answer is no."
    # the same path, as if the gold answer were yes: no "The answer is: 3. So the answer is yes."
    completion = ds.sert_completion(PEAR_OWN_ANSWER_LAST, "yes")
    assert completion.count("answer is") == 1 and answers.parse_answer(completion, "yes_no") == "yes"


def test_a_path_keeps_an_answer_followed_by_more_text_and_a_lone_answer_sentence():
    assert ds.sert_completion(PEAR_ANSWER_FIRST, "no") == f" {ds.clean(PEAR_ANSWER_FIRST)} So the answer is no."
    assert ds.sert_completion(PEAR_MORE_AFTER, "no") == f" {ds.clean(PEAR_MORE_AFTER)} So the answer is no."
    # nothing but one answer sentence: kept whole (every selected path is a sample)
    assert ds.sert_completion(PEAR_ONLY_AN_ANSWER, "no") == f" {ds.clean(PEAR_ONLY_AN_ANSWER)} So the answer is no."
    for path in (PEAR_ANSWER_FIRST, PEAR_MORE_AFTER, PEAR_ONLY_AN_ANSWER, PEAR_OWN_ANSWER_LAST):
        assert answers.parse_answer(ds.sert_completion(path, "yes"), "yes_no") == "yes"


def test_the_sert_set_cuts_the_paths_it_trains_on(engine, sqa):
    from sqlmodel import select

    from db.models import Job
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.jobs import create_job
    from tests.test_app_helpers import make_filter_job

    with session_scope(engine) as s:
        _q1, pear = split_questions(s, sqa.id, "train", 2)
    assert pear.text == "Would a pear sink in water?" and pear.answer == "no"
    job = create_job(engine, "sample", {}, dataset_id=sqa.id)
    paths = [PEAR_OWN_ANSWER_LAST, PEAR_ONLY_AN_ANSWER]
    with session_scope(engine) as s:
        rows = [{"branch": b, "sample": 0, "text": t, "selected": True} for b, t in enumerate(paths)]
        write_question_paths(s, job.id, pear.id, rows)
    filt = make_filter_job(engine, sqa.id, job.id)
    with session_scope(engine) as s:
        samples = ds.sert_samples(s, s.exec(select(Job).where(Job.id == job.id)).one(), sqa, filt)
    assert [smp.completion for smp in samples] == [
        " No, a pear would not sink in water. So the answer is no.",
        " The answer is no, because a pear cannot be able to sink in water. So the answer is no.",
    ]
    assert all(smp.prompt == "Question: Would a pear sink in water? Answer:" for smp in samples)
