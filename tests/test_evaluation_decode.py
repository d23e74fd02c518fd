"""Greedy evaluation on the engine's decoder (engine.evaluation.decode).

Outputs are compared by a property that does not depend on float rounding: every token the engine chose is the
argmax of the model's own forward over the prompt and the tokens before it (up to a rounding margin), each output
ends exactly at EOS or at ``max_new_tokens``, and where it differs from ``model.generate`` the first difference
is a near-tie of the two top logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.evaluation.decode import greedy_engine
from engine.evaluation.generate import greedy_batches
from engine.models import eos_token_ids
from engine.prompts import training_prompt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "reasoning-teacher"
MARGIN = 1e-3  # fp32 rounding between batch shapes is ~1e-5 on these logits


def strategyqa_prompts(n: int) -> list[tuple[int, str]]:
    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    split = json.loads((DATA / "split" / "strategy_qa__default.json").read_text())
    return [(i, training_prompt(rows[i]["question"])) for i in split["test"][:n]]


def check_greedy(model, tokenizer, items, outputs, max_new: int) -> None:
    """Each output is the model's greedy continuation of its prompt, up to near-ties."""
    eos = set(eos_token_ids(model, tokenizer))
    prompts = dict(items)
    assert set(outputs) == set(prompts)
    for key, gen in outputs.items():
        ids = tokenizer(prompts[key]).input_ids
        new = gen.token_ids
        assert len(new) <= max_new and not eos & set(new)
        with torch.inference_mode():
            logits = model(torch.tensor([ids + new])).logits[0, len(ids) - 1 :].float()
        for step, tok in enumerate(new):
            assert float(logits[step].max() - logits[step, tok]) < MARGIN, (key, step)
        if len(new) < max_new:  # it stopped early: the next greedy token is an EOS (or a near-tie with one)
            best = float(logits[len(new)].max())
            assert any(best - float(logits[len(new), e]) < MARGIN for e in eos), key
        assert gen.text == tokenizer.decode(new, skip_special_tokens=True)


def check_against_generate(model, tokenizer, items, outputs, reference) -> None:
    """Where the engine and ``generate`` differ, the first differing token is a near-tie."""
    prompts = dict(items)
    for key, ref in reference.items():
        a, b = outputs[key].token_ids, ref.token_ids
        if a == b:
            continue
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        ids = tokenizer(prompts[key]).input_ids + a[:at]
        with torch.inference_mode():
            top = torch.topk(model(torch.tensor([ids])).logits[0, -1].float(), 2).values
        assert float(top[0] - top[1]) < MARGIN, key


@pytest.fixture(scope="module")
def tiny(tokenizer_default):
    from tests.conftest import tiny_llama

    return tiny_llama(len(tokenizer_default), max_position_embeddings=256).eval()


@pytest.fixture(scope="module")
def tokenizer_default():
    from engine.models import load_tokenizer

    return load_tokenizer("default")


ITEMS = [
    (0, "Question: Is water wet? Answer:"),
    (1, "Question: Would a pear sink in water if it were made of lead? Answer:"),
    (2, "Question: Yes? Answer:"),
    (3, "Question: Can a dolphin write a letter to the mayor of a small town in Norway? Answer:"),
    (4, "Question: Is two more than one? Answer:"),
]


@pytest.fixture(params=["bf16-head", "fp32-head"])
def head(request, monkeypatch) -> str:
    """Both LM heads of the fp32 engine on every machine: the bf16 candidates (``engine.evaluation.greedy_head``,
    used where bf16 measures fast; forced here) and the plain fp32 product."""
    import engine.precision

    monkeypatch.setattr(engine.precision, "cpu_bf16_fast", lambda: request.param == "bf16-head")
    return request.param


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "generic"])
def test_engine_greedy_is_greedy_on_a_tiny_model(tiny, tokenizer_default, rows, fused, head) -> None:
    """Rows 1/2/5: questions join and leave the batch at every step (continuous batching, compaction)."""
    stats: dict = {}
    outputs = {
        g.key: g
        for chunk in greedy_engine(
            tiny, tokenizer_default, ITEMS, max_new_tokens=9, rows=rows, fused=fused, stats=stats
        )
        for g in chunk
    }
    check_greedy(tiny, tokenizer_default, ITEMS, outputs, 9)
    reference = {
        g.key: g for b in greedy_batches(tiny, tokenizer_default, ITEMS, max_new_tokens=9, batch_size=5) for g in b
    }
    check_against_generate(tiny, tokenizer_default, ITEMS, outputs, reference)
    assert stats["rows"] == rows and stats["decoded_tokens"] == sum(len(g.token_ids) for g in outputs.values())
    assert ("head_rows" in stats) is (fused and head == "bf16-head")


def test_greedy_head_is_the_fp32_argmax() -> None:
    """Random logits (the bound proves the candidates' best nearly always) and near-ties made on purpose: 100 rows
    of the weight equal to one row up to less than bf16 resolves, so that their bf16 logits tie and the best of
    them may fall outside the 32 candidates; those rows must go to the full fp32 product."""
    from engine.evaluation.greedy_head import GreedyHead

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3000, 64, generator=gen) * 0.1
    x = torch.randn(48, 64, generator=gen) * 3
    head = GreedyHead(weight)
    assert torch.equal(head.argmax(x), torch.nn.functional.linear(x, weight).argmax(dim=-1))
    assert head.rows == 48 and head.fallback_rows < 48

    top = torch.nn.functional.linear(x, weight).argmax(dim=-1)
    tied = weight.clone()
    tied[2000:2100] = weight[top[0]] + torch.randn(100, 64, generator=gen) * 1e-5
    tied[2050] = weight[top[0]] * 1.001  # the true argmax of row 0, inside bf16's rounding of its rivals
    head = GreedyHead(tied)
    got = head.argmax(x)
    assert torch.equal(got, torch.nn.functional.linear(x, tied).argmax(dim=-1))
    assert got[0] == 2050 and head.fallback_rows >= 1


def test_greedy_head_applies_to_fp32_fused_decoders_where_bf16_is_fast(tiny, monkeypatch) -> None:
    import copy

    import engine.precision
    from engine.evaluation.greedy_head import greedy_head_for
    from engine.sampling.decoders import make_decoder

    monkeypatch.setattr(engine.precision, "cpu_bf16_fast", lambda: True)
    assert greedy_head_for(make_decoder(tiny, 2, 32, fused=True)) is not None
    assert greedy_head_for(make_decoder(tiny, 2, 32, fused=False)) is None
    assert greedy_head_for(make_decoder(copy.deepcopy(tiny).bfloat16(), 2, 32, fused=True)) is None
    monkeypatch.setattr(engine.precision, "cpu_bf16_fast", lambda: False)
    assert greedy_head_for(make_decoder(tiny, 2, 32, fused=True)) is None


def test_engine_greedy_stops_at_eos(tiny, tokenizer_default) -> None:
    """An EOS id the tiny model does emit (a greedy token of one prompt that it has not emitted before): that
    output stops before it, exactly where ``generate`` stops."""
    import copy

    first = next(iter(greedy_batches(tiny, tokenizer_default, ITEMS[:1], max_new_tokens=9, batch_size=1)))[0].token_ids
    cut = next(j for j in range(1, len(first)) if first[j] not in first[:j])
    model = copy.deepcopy(tiny)
    model.generation_config.eos_token_id = first[cut]
    outputs = {g.key: g for c in greedy_engine(model, tokenizer_default, ITEMS, max_new_tokens=9, rows=2) for g in c}
    assert outputs[0].token_ids == first[:cut]
    check_greedy(model, tokenizer_default, ITEMS, outputs, 9)


def test_engine_greedy_yields_chunks_as_questions_finish(tiny, tokenizer_default) -> None:
    chunks = list(greedy_engine(tiny, tokenizer_default, ITEMS, max_new_tokens=4, rows=2, chunk=2))
    assert sorted(g.key for c in chunks for g in c) == [0, 1, 2, 3, 4]
    assert all(1 <= len(c) for c in chunks) and len(chunks) >= 2


def test_engine_greedy_on_the_real_student(student) -> None:
    """The bundled student on StrategyQA test prompts, fp32: greedy up to near-ties, and ``generate`` agrees but
    for near-ties."""
    model, tokenizer = student
    items = strategyqa_prompts(6)
    outputs = {g.key: g for c in greedy_engine(model, tokenizer, items, max_new_tokens=24, rows=4) for g in c}
    check_greedy(model, tokenizer, items, outputs, 24)
    reference = {g.key: g for b in greedy_batches(model, tokenizer, items, max_new_tokens=24, batch_size=6) for g in b}
    check_against_generate(model, tokenizer, items, outputs, reference)
