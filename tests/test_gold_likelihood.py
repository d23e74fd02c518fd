"""``filters.select = "gold_likelihood"`` (LaTRO's self-reward): the scored text is the SERT training sample, its
tokens are training's, the score equals a plain forward (a tiny model built from a config, and the bundled student
on real paths within 1e-4), and the filter stage scores the survivors once, resumably, then selects by it."""

from __future__ import annotations

import json

import pytest
import torch

from engine.config import SamplingConfig
from engine.filtering.gold import encode_gold, gold_text, score_texts
from engine.training.datasets import Sample, answer_surface, sert_completion
from engine.training.trainer import encode_samples
from tests.conftest import rt_files, tiny_llama

QUESTION = "Could a dolphin write a novel?"
PATHS = [
    " Dolphins have no hands, so they cannot hold a pen. The answer is no.",
    " Dolphins are smart  but\n cannot write.",
    " A novel needs words. Dolphins, however, communicate with clicks, so the answer is no.",
    " Yes, because dolphins are very intelligent animals that can learn many tricks and signs.",
]


@pytest.fixture(scope="module")
def tokenizer():
    from engine.models import load_tokenizer

    return load_tokenizer("default")


def plain_gold_logp(model, tokenizer, text) -> float:
    """The reference: one unbatched float32 forward of the full causal LM over the training sample's tokens, the
    sum of the log-softmax at the answer sentence's tokens (tokenized on their own)."""
    context = tokenizer(text.prompt, add_special_tokens=True)["input_ids"]
    context += tokenizer(text.completion[: text.split], add_special_tokens=False)["input_ids"]
    answer = tokenizer(text.answer_sentence, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([context + answer])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(context) - 1 + j, t]) for j, t in enumerate(answer))


def test_the_scored_text_is_the_sert_sample() -> None:
    for path in PATHS:
        t = gold_text(QUESTION, path, "no")
        assert t.prompt == "Question: Could a dolphin write a novel? Answer:"
        assert t.completion == sert_completion(path, "no")
        assert t.answer_sentence == " So the answer is no."
        assert t.context + t.answer_sentence == t.prompt + t.completion
    # the path's own final answer sentence is cut, as in training
    assert gold_text(QUESTION, PATHS[0], "no").context.endswith("so they cannot hold a pen.")
    assert gold_text(QUESTION, PATHS[2], "no").context.endswith("communicate with clicks.")
    assert answer_surface("yes", "yes_no") == "yes" and gold_text("Q?", " x y z", "C").answer_sentence.endswith(" C.")


def test_tokens_are_trainings_and_the_split_is_the_answer_sentence(tokenizer) -> None:
    texts = [gold_text(QUESTION, p, g) for p in PATHS for g in ("yes", "no")]
    encoded = encode_gold(tokenizer, texts)
    samples = [Sample(t.prompt, t.completion) for t in texts]
    trained, dropped = encode_samples(tokenizer, samples, max_length=10_000)
    assert dropped == 0
    for (ids, split), t, sample in zip(encoded, texts, trained, strict=True):
        assert ids == sample.input_ids[:-1]  # training's tokens, without the EOS it appends
        assert tokenizer.decode(ids[split:]) == t.answer_sentence
        assert split > sample.n_prompt


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_model_scores_equal_a_plain_forward(tokenizer, seed) -> None:
    """A tiny Llama built from a config, float32: the batched selective score of every text equals the plain
    full-logits forward of that text alone; batch size changes nothing."""
    model = tiny_llama(len(tokenizer), seed=seed).eval()
    texts = [gold_text(QUESTION, p, g) for p in PATHS for g in ("yes", "no")]
    scores = score_texts(model, tokenizer, texts, batch_size=3)
    for t, score in zip(texts, scores, strict=True):
        assert score == pytest.approx(plain_gold_logp(model, tokenizer, t), abs=1e-5)
        assert score < 0
    assert score_texts(model, tokenizer, texts, batch_size=1) == pytest.approx(scores, abs=1e-5)
    assert score_texts(model, tokenizer, []) == []


def test_a_model_without_a_plain_lm_head_takes_the_full_forward(tokenizer) -> None:
    model = tiny_llama(len(tokenizer), final_logit_softcapping=None).eval()
    model.config.logit_scale = 1.0  # marks the logits as not a plain linear map: the full forward is used
    texts = [gold_text(QUESTION, p, "yes") for p in PATHS]
    scores = score_texts(model, tokenizer, texts, batch_size=2)
    for t, score in zip(texts, scores, strict=True):
        assert score == pytest.approx(plain_gold_logp(model, tokenizer, t), abs=1e-5)


# -- the bundled student on real paths ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student_fp32():
    from engine.models import load_model

    return load_model("default", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def real_paths(student_fp32):
    """Real paths: the engine's sampler on two StrategyQA questions, 3 branches x 2 samples each, 24 tokens."""
    from engine.sampling.backends import make_sampler_from_model

    model, tokenizer = student_fp32
    dataset_file, split_file = rt_files("strategy_qa")
    rows = json.loads(dataset_file.read_text())
    train = json.loads(split_file.read_text())["train"]
    items = [(i, rows[i]["question"]) for i in train[:2]]
    sampler = make_sampler_from_model(
        model, tokenizer, SamplingConfig(first_tokens=3, per_branch=2, max_new_tokens=24, seed=0), threads=1
    )
    calls: list = []
    sampler.sample(items, lambda key, paths: calls.append((key, paths)))
    gold = {i: "yes" if rows[i]["answer"] in (True, "yes", "Yes") else "no" for i, _q in items}
    return [(rows[key]["question"], p.text, gold[key]) for key, paths in calls for p in paths]


@pytest.mark.model
def test_gold_likelihood_of_real_paths_matches_a_plain_forward(student_fp32, real_paths) -> None:
    """Twelve real paths of the bundled student: the engine's score (batched, selective head) equals an unbatched
    plain AutoModelForCausalLM forward in float32 on the same text within 1e-4."""
    model, tokenizer = student_fp32
    texts = [gold_text(q, p, g) for q, p, g in real_paths if p.strip()]
    assert len(texts) >= 8
    scores = score_texts(model, tokenizer, texts)
    for t, score in zip(texts, scores, strict=True):
        assert score == pytest.approx(plain_gold_logp(model, tokenizer, t), abs=1e-4)
    # the other answer is a different number: the score reads the gold answer
    flipped = [gold_text(q, p, "no" if g == "yes" else "yes") for q, p, g in real_paths if p.strip()]
    assert score_texts(model, tokenizer, flipped) != pytest.approx(scores, abs=1e-3)


# -- the filter stage ---------------------------------------------------------------------------------------------

REASONING = (
    " Frost forms when the ground cools below freezing overnight, and many universities hold their "
    "commencement ceremonies in early spring when cold mornings are common."
)


def _gold_job(engine, sqa, n_questions: int = 2):
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.config import config_from_dict
    from engine.jobs import create_job
    from engine.sampling.stage import sample_fingerprint

    def config(**filters_section):
        data = {"data": {"dataset": "sqa", "train_limit": n_questions}, "filters": filters_section}
        return config_from_dict(data)

    base = config()
    job = create_job(
        engine, "sample", base.model_dump(mode="json"), fp=sample_fingerprint(base, sqa), dataset_id=sqa.id
    )
    texts = [REASONING, REASONING + " So yes.", REASONING + " It rarely snows then.", " No."]
    with session_scope(engine) as s:
        for q in split_questions(s, sqa.id, "train", n_questions):
            rows = [
                dict(branch=b, sample=0, text=t, tokens=30, rep2=0.01 * (b + 1), perplexity=9.0)
                for b, t in enumerate(texts)
            ]
            write_question_paths(s, job.id, q.id, rows)
        s.get(type(job), job.id).status = "completed"
    return job, config


def _scores(engine, job_id):
    from sqlmodel import select

    from db.models import Path
    from db.session import session_scope

    with session_scope(engine) as s:
        rows = s.exec(select(Path).where(Path.job_id == job_id).order_by(Path.id)).all()
        return {p.id: (p.gold_logp, p.passed, p.selected, p.verdicts.get("selection", {}).get("reason")) for p in rows}


def test_filter_stage_scores_survivors_once_and_selects_by_the_score(engine, sqa, tokenizer, monkeypatch) -> None:
    """select = gold_likelihood: the stage scores the survivors only (the bare answer fails the pattern rule and
    gets no score), keeps the highest-scoring survivor per question, and a re-filter with other settings loads no
    model for paths already scored."""
    from engine.filtering import gold
    from engine.pipeline import run_stage

    model = tiny_llama(len(tokenizer), seed=3).eval()
    loads: list[int] = []

    def fake_loader(config, log):
        loads.append(1)
        return model, tokenizer

    monkeypatch.setattr(gold, "load_scorer", fake_loader)
    job, config = _gold_job(engine, sqa)
    logs: list[str] = []
    [filt] = run_stage(engine, config(select="gold_likelihood"), "filter", logs.append)
    assert filt.status == "completed" and loads == [1]
    assert any("gold likelihood: 6 surviving paths, 0 scored before, 6 to score" in line for line in logs)
    rows = _scores(engine, job.id)
    scored = {pid: v for pid, v in rows.items() if v[0] is not None}
    assert len(scored) == 6 and all(v[1] for v in scored.values())  # survivors only
    assert all(not v[1] and v[0] is None for v in rows.values() if v[0] is None)
    selected = [pid for pid, v in rows.items() if v[2]]
    assert len(selected) == 2
    for pid in selected:
        assert rows[pid][3].startswith("highest gold log-likelihood (")
        assert rows[pid][3].endswith("of 3 surviving paths")
    # the selected path of each question has the highest score of its question's survivors (4 paths per question)
    ids = sorted(rows)
    for q in (ids[:4], ids[4:]):
        best = max((rows[p][0], -p) for p in q if rows[p][0] is not None)
        assert rows[-best[1]][2]
    loads.clear()
    [again] = run_stage(engine, config(select="gold_likelihood", min_perplexity=4.0), "filter", logs.append)
    assert again.id != filt.id and loads == []  # nothing left to score: no model loaded
    assert _scores(engine, job.id) == rows


def test_a_killed_scoring_keeps_its_scores_and_resumes(engine, sqa, tokenizer, monkeypatch) -> None:
    from engine.filtering import gold
    from engine.pipeline import run_stage

    model = tiny_llama(len(tokenizer), seed=4).eval()
    monkeypatch.setattr(gold, "load_scorer", lambda config, log: (model, tokenizer))
    monkeypatch.setattr(gold, "WRITE_EVERY", 2)
    real = gold.score_texts
    calls = {"n": 0}

    def dying(model, tokenizer, texts, batch_size=gold.BATCH_SIZE):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(model, tokenizer, texts, batch_size)

    monkeypatch.setattr(gold, "score_texts", dying)
    job, config = _gold_job(engine, sqa)
    with pytest.raises(RuntimeError):
        run_stage(engine, config(select="gold_likelihood"), "filter", print)
    assert sum(v[0] is not None for v in _scores(engine, job.id).values()) == 4  # two chunks written
    monkeypatch.setattr(gold, "score_texts", real)
    logs: list[str] = []
    [filt] = run_stage(engine, config(select="gold_likelihood"), "filter", logs.append)
    assert filt.status == "completed"
    assert any("4 scored before, 2 to score" in line for line in logs)
    assert sum(v[0] is not None for v in _scores(engine, job.id).values()) == 6
