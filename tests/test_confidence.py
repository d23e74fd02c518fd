"""Path confidence (CoT-decoding's Δ, Wang & Zhou 2024) and self-consistency agreement: the per-token margins of
the sampling kernel by hand, the answer's character span and its tokens, Δ on real paths of the bundled student
against a separate plain forward, agreement on a hand-built set, and the ``filters.select = "confidence"``
selection."""

from __future__ import annotations

import json

import pytest
import torch

from engine.answers import find_answer, parse_answer
from engine.config import FiltersConfig, SamplingConfig
from engine.filtering import rules as filters
from engine.filtering.rules import AnswerSpec, PathInput, QuestionInput
from engine.prompts import sampling_prompt
from engine.sampling.backends import make_sampler_from_model
from engine.sampling.ops import plain_margins, sample_step, sample_top_k_top_p
from engine.sampling.paths import answer_token_span, path_confidence, text_decoder
from engine.sampling.stage import path_row
from tests.conftest import rt_files

# -- the kernel's margins ------------------------------------------------------------------------------------


def test_margin_is_the_plain_distributions_top_two_gap() -> None:
    # probabilities 0.5, 0.3, 0.1, ... and a second row 0.4, 0.4, ...: margins 0.2 and 0
    logits = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.03, 0.02], [0.4, 0.4, 0.1, 0.05, 0.03, 0.02]]).log() + 3.0
    u = torch.tensor([0.7, 0.2])
    for top_k, temperature in [(3, 1.0), (1, 1.0), (10, 0.5)]:
        tokens, logprobs, margins = sample_step(logits, u, top_k, 0.8, temperature)
        # truncation and temperature shape the sampling, never the margin (temperature 1, full vocabulary)
        assert margins.tolist() == pytest.approx([0.2, 0.0], abs=1e-6)
        plain = sample_top_k_top_p(logits, u, top_k, 0.8, temperature)
        assert torch.equal(tokens, plain[0]) and torch.equal(logprobs, plain[1])
    assert float(plain_margins(torch.log_softmax(logits[0], dim=-1))) == pytest.approx(0.2, abs=1e-6)


# -- the answer's span and its tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "piece"),
    [
        (" Yes, frost is common. So the answer is: No.", "yes_no", "No"),
        (" I think yes. Actually, no", "yes_no", "no"),
        (" The answer is (B) enforce.", "choice", "B"),
        (" Total is 1,234.50 dollars", "number", "1,234.50"),
        (' So the answer is "nkta".\nmore', "string", "nkta"),
        (" just words here.", "string", "here"),
    ],
)
def test_find_answer_points_at_what_the_parser_read(text: str, kind: str, piece: str) -> None:
    found = find_answer(text, kind)
    assert found is not None and text[found.start : found.end] == piece
    assert found.value == parse_answer(text, kind)
    assert find_answer(" nothing here", "yes_no") is None


def test_answer_token_span_on_the_real_tokenizer(student) -> None:
    _model, tokenizer = student
    decode = text_decoder(tokenizer)
    text = " Frost is rare in May, so the answer is yes unless 1,234 it"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert decode(ids) == text
    for piece in (" yes", "yes", "1,234", " Frost", " it", "s"):
        start = text.index(piece)
        end = start + len(piece)
        ends = [len(decode(ids[: i + 1])) for i in range(len(ids))]
        starts = [0] + ends[:-1]
        expected = [i for i in range(len(ids)) if starts[i] < end and ends[i] > start]  # every prefix, one by one
        assert list(answer_token_span(decode, ids, start, end)) == expected
    assert path_confidence([0.1] * len(ids), ids, decode, None) is None  # no answer: no confidence
    assert path_confidence(None, ids, decode, (0, 3)) is None  # no margins: no confidence


# -- Δ on real paths of the bundled student --------------------------------------------------------------------


@pytest.fixture(scope="module")
def student_fp32():
    from engine.models import load_model

    return load_model("default", device="cpu", dtype="float32")


@pytest.mark.model
def test_confidence_of_real_paths_matches_a_plain_forward(student_fp32) -> None:
    """Three StrategyQA questions, 25 paths each: the Δ stored for a path (from the sampling passes' own logits)
    equals the mean p(top-1) - p(top-2) of a separate plain forward over prompt + path, at the tokens overlapping
    the parser's answer, every prefix decoded by hand."""
    model, tokenizer = student_fp32
    dataset_file, split_file = rt_files("strategy_qa")
    rows = json.loads(dataset_file.read_text())
    train = json.loads(split_file.read_text())["train"]
    items = [(i, rows[i]["question"]) for i in train[:3]]
    sampler = make_sampler_from_model(model, tokenizer, SamplingConfig(max_new_tokens=20, seed=0), threads=1)
    calls: list[tuple[int, list]] = []
    sampler.sample(items, lambda key, paths: calls.append((key, paths)))
    spec = AnswerSpec("yes_no")
    decode = text_decoder(tokenizer)
    checked = 0
    for key, paths in calls:
        prompt = tokenizer(sampling_prompt(rows[key]["question"])).input_ids
        # one plain forward over prompt + path for all 25 paths (right-padded: a pad after a path changes nothing
        # before it)
        width = max(p.tokens for p in paths)
        batch = torch.full((len(paths), len(prompt) + width), tokenizer.pad_token_id)
        for i, p in enumerate(paths):
            batch[i, : len(prompt) + p.tokens] = torch.tensor(prompt + p.token_ids)
        with torch.inference_mode():
            all_logits = model(batch).logits.float()
        for p, logits in zip(paths, all_logits, strict=True):
            row = path_row(p, "yes", spec, decode)
            found = find_answer(p.text, "yes_no")
            if found is None:
                assert row["answer"] is None and row["confidence"] is None
                continue
            probs = torch.softmax(logits[len(prompt) - 1 : len(prompt) - 1 + p.tokens], dim=-1)
            top2 = torch.topk(probs, 2, dim=-1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
            ends = [len(decode(p.token_ids[: i + 1])) for i in range(p.tokens)]
            starts = [0] + ends[:-1]
            answer_tokens = [i for i in range(p.tokens) if starts[i] < found.end and ends[i] > found.start]
            assert answer_tokens
            expected = sum(margins[i] for i in answer_tokens) / len(answer_tokens)
            assert row["confidence"] == pytest.approx(expected, abs=1e-4)
            assert 0.0 <= row["confidence"] <= 1.0
            checked += 1
    assert checked >= 10  # enough paths state an answer to check


# -- selection by confidence and the min_confidence rule ---------------------------------------------------------

REASONING = (
    " Frost forms when the ground cools below freezing overnight, and many universities hold their "
    "commencement ceremonies in early spring when cold mornings are still common in northern states."
)
QUESTION = QuestionInput("Is it common to see frost during some college commencements?", "yes")


def _path(i: int, rep2: float = 0.1, confidence: float | None = 0.5, tokens: int = 30) -> PathInput:
    return PathInput(i, i, 0, REASONING, tokens, rep2, 8.0, confidence)


def test_select_confidence_keeps_the_highest_delta_among_survivors() -> None:
    paths = [
        _path(1, rep2=0.01, confidence=0.2),  # lowest rep-2: the paper's choice
        _path(2, rep2=0.10, confidence=0.9),  # highest Δ of the survivors
        _path(3, rep2=0.15, confidence=0.95, tokens=5),  # higher Δ, but the length rule removes it
        _path(4, rep2=0.12, confidence=None),  # no answer: never above a path with a confidence
    ]
    assert [r.id for r in filters.judge_question(paths, QUESTION, FiltersConfig()) if r.selected] == [1]
    results = filters.judge_question(paths, QUESTION, FiltersConfig(select="confidence"))
    by_id = {r.id: r for r in results}
    assert [r.id for r in results if r.selected] == [2]
    assert by_id[2].verdicts["selection"]["reason"] == "highest confidence (0.900) of 3 surviving paths"
    assert by_id[4].verdicts["selection"]["reason"] == "branch 2 sample 0 was kept (confidence 0.900 vs none)"
    assert "confidence" not in by_id[1].verdicts  # min_confidence 0: the rule is off
    # ties on Δ: the lowest rep-2, then the key order; a question whose survivors have no confidence: key order
    tied = [_path(5, 0.10, 0.7), _path(6, 0.05, 0.7), _path(7, 0.05, 0.7)]
    for order in (tied, tied[::-1]):
        assert _selected(order, FiltersConfig(select="confidence")) == [6]
    assert _selected([_path(9, 0.2, None), _path(8, 0.1, None)], FiltersConfig(select="confidence")) == [8]


def _selected(paths: list[PathInput], cfg: FiltersConfig) -> list[int]:
    return [r.id for r in filters.judge_question(paths, QUESTION, cfg) if r.selected]


def test_min_confidence_is_an_optional_rule_after_perplexity() -> None:
    paths = [_path(1, confidence=0.3), _path(2, confidence=0.6, rep2=0.2), _path(3, confidence=None, rep2=0.0)]
    cfg = FiltersConfig(min_confidence=0.5)
    assert filters.rules_in_order(cfg) == ["pattern", "length", "repetition", "perplexity", "confidence"]
    assert filters.rules_in_order(FiltersConfig(min_confidence=0.5, require_correct=True))[-2:] == [
        "confidence",
        "correctness",
    ]
    results = filters.judge_question(paths, QUESTION, cfg)
    assert list(results[0].verdicts) == ["pattern", "length", "repetition", "perplexity", "confidence", "selection"]
    assert results[0].verdicts["confidence"] == {"pass": False, "reason": "confidence 0.300 < 0.5"}
    assert not results[2].verdicts["confidence"]["pass"]  # no confidence recorded: dropped while the rule is on
    assert [r.id for r in results if r.passed] == [2] and [r.id for r in results if r.selected] == [2]
    counts = filters.count_verdicts([(1, r.verdicts, r.selected) for r in results], filters.rules_in_order(cfg))
    assert counts["removed"]["confidence"] == 2


def test_filter_fingerprint_changes_only_off_the_defaults() -> None:
    from engine.config import config_from_dict
    from engine.filtering.stage import filter_fingerprint
    from engine.jobs import fingerprint

    base = config_from_dict({"data": {"dataset": "sqa"}})
    # what an older sert-tui computed: the four settings it had
    old = {"min_tokens": 25, "max_rep2": 0.2, "min_perplexity": 5.0, "require_correct": False}
    assert filter_fingerprint(base, 7) == fingerprint("filter", {"filters": old, "parent": 7})
    for change in ({"select": "confidence"}, {"min_confidence": 0.3}):
        other = config_from_dict({"data": {"dataset": "sqa"}, "filters": change})
        assert filter_fingerprint(other, 7) != filter_fingerprint(base, 7)


def test_filter_stage_select_confidence_on_a_workspace(engine, sqa) -> None:
    """The filter stage reads Path.confidence: with select = "confidence" it keeps the highest-Δ survivor of each
    question, with the default the lowest rep-2 one; the two are different jobs, the default's fingerprint the
    same as before these settings existed."""
    from sqlmodel import select

    from db.models import Path
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.config import config_from_dict
    from engine.jobs import create_job
    from engine.pipeline import run_stage
    from engine.sampling.stage import sample_fingerprint

    def config(**filters_section):
        return config_from_dict({"data": {"dataset": "sqa", "train_limit": 2}, "filters": filters_section})

    base = config()
    job = create_job(
        engine, "sample", base.model_dump(mode="json"), fp=sample_fingerprint(base, sqa), dataset_id=sqa.id
    )
    with session_scope(engine) as s:
        for q in split_questions(s, sqa.id, "train", 2):
            rows = [
                dict(branch=b, sample=0, text=REASONING, tokens=30, rep2=r2, perplexity=9.0, confidence=c)
                for b, (r2, c) in enumerate([(0.02, 0.1), (0.10, 0.8), (0.05, None), (0.15, 0.6)])
            ]
            write_question_paths(s, job.id, q.id, rows)
        s.get(type(job), job.id).status = "completed"

    def selected() -> list[tuple[int, float | None]]:
        with session_scope(engine) as s:
            rows = s.exec(select(Path).where(Path.job_id == job.id, Path.selected).order_by(Path.question_id)).all()
            return [(p.branch, p.confidence) for p in rows]

    [by_rep2] = run_stage(engine, base, "filter", print)
    assert selected() == [(0, 0.1), (0, 0.1)]
    [by_conf] = run_stage(engine, config(select="confidence"), "filter", print)
    assert by_conf.id != by_rep2.id and selected() == [(1, 0.8), (1, 0.8)]
    [strict] = run_stage(engine, config(select="confidence", min_confidence=0.7), "filter", print)
    assert strict.summary["removed"]["confidence"] == 6 and selected() == [(1, 0.8), (1, 0.8)]


# -- agreement (self-consistency) -----------------------------------------------------------------------------


def test_agreement_on_a_hand_built_job(engine, db_path, sqa, capsys) -> None:
    """Agreement counts the paths of the same question and job with the same parsed answer (itself included),
    None without an answer; ``paths list --json`` and the paths screen's page read give the same numbers."""
    from db import app_queries as q
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import session_scope
    from engine.jobs import create_job
    from sert_tui.cli import main

    job = create_job(engine, "sample", {}, dataset_id=sqa.id)
    other = create_job(engine, "sample", {}, dataset_id=sqa.id)
    answers = {0: ["yes", "yes", "no", None, "yes"], 1: ["no", "yes"]}
    expected = {0: [3, 3, 1, None, 3], 1: [1, 1]}
    with session_scope(engine) as s:
        questions = split_questions(s, sqa.id, "train", 2)
        for n, q_row in enumerate(questions):
            rows = [
                dict(branch=b, sample=0, text=f"path {b}", tokens=2, answer=a, confidence=0.5 if a else None)
                for b, a in enumerate(answers[n])
            ]
            write_question_paths(s, job.id, q_row.id, rows)
            # the same answers in another job count nothing here
            write_question_paths(s, other.id, q_row.id, [dict(branch=0, sample=0, text="x", answer="yes")])
    assert main(["--db", str(db_path), "paths", "list", "--job", str(job.id), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_question: dict[int, list] = {}
    for row in listed:
        by_question.setdefault(row["question_index"], []).append(row)
    got = [[r["agreement"] for r in rows] for _index, rows in sorted(by_question.items())]
    order = sorted(range(2), key=lambda n: questions[n].index)
    assert got == [expected[n] for n in order]
    assert [r["confidence"] for r in listed if r["answer"] is None] == [None]
    with engine.connect() as conn:
        page = q.page_paths(conn, job.id, q.PathFilter())
    assert {r.id: r.agreement for r in page.rows} == {r["id"]: r["agreement"] for r in listed}
    assert {r.id: r.confidence for r in page.rows} == {r["id"]: r["confidence"] for r in listed}
