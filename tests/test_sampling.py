"""SERT stage-1 sampling (engine.sampling): the top-k/top-p kernel on hand-checked distributions, the 5 x 5
branch structure, log-probs against a separate teacher-forced pass, determinism, continuous batching and
early stop, and the batch-invariant mode -- on tiny random models (Llama through the fused decoder, GPT-2
through the model's own forward) and on the real bundled student; plus the vLLM backend's GPU-free parts and its
gating.

No test here compares texts sampled in batches of different composition in the default mode: those can differ
by a rounding flip (engine.sampling.hf). Exact comparisons across batch sizes, orders and neighbours use
``batch_invariant``; in the default mode only a rerun of the very same batches (same items, batch size and a
fixed thread count) is compared."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from db.errors import UserError
from engine.config import SamplingConfig, StudentConfig
from engine.prompts import sampling_prompt
from engine.sampling.backends import make_sampler, make_sampler_from_model, resolve_backend, vllm_available
from engine.sampling.ops import (
    logsumexp_rows,
    question_seed,
    sample_top_k_top_p,
    topk_values,
    truncated_distribution,
)
from engine.sampling.threads import ThreadTuner
from tests.conftest import rt_files

# -- the sampling kernel -------------------------------------------------------------------------------------


def _hand_logits() -> torch.Tensor:
    # probabilities 0.5, 0.3, 0.1, 0.05, 0.03, 0.02 (already normalised: log-probs are the logits)
    return torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.03, 0.02]]).log()


def test_sampling_prompt() -> None:
    assert sampling_prompt("Is ice cold?") == "Question: Is ice cold?\nAnswer:"


def test_top_k_then_top_p_by_hand() -> None:
    logits = _hand_logits()
    # top-3 renormalised: 0.5/0.9, 0.3/0.9, 0.1/0.9; mass before the third is 0.889 >= 0.8 -> dropped
    dist = truncated_distribution(logits, top_k=3, top_p=0.8)
    assert dist[0].tolist() == pytest.approx([0.625, 0.375, 0, 0, 0, 0], abs=1e-6)
    # inverse CDF over the kept candidates: [0, 0.625) -> token 0, [0.625, 1) -> token 1
    for u, expected in [(0.0, 0), (0.6, 0), (0.63, 1), (0.999999, 1)]:
        token, logprob = sample_top_k_top_p(logits, torch.tensor([u]), top_k=3, top_p=0.8)
        assert token.item() == expected
        # the log-prob is the plain distribution's, not the truncated one's
        assert logprob.item() == pytest.approx(math.log([0.5, 0.3][expected]), abs=1e-6)
    # top_p = 1 keeps the whole top-k; top_k = 1 is greedy
    assert truncated_distribution(logits, 3, 1.0)[0, :3].tolist() == pytest.approx([5 / 9, 3 / 9, 1 / 9], abs=1e-6)
    assert sample_top_k_top_p(logits, torch.tensor([0.99]), top_k=1, top_p=0.95)[0].item() == 0


def test_temperature_flattens_the_kept_distribution() -> None:
    logits = _hand_logits()
    hot = truncated_distribution(logits, top_k=2, top_p=1.0, temperature=2.0)[0, :2]
    expected = torch.tensor([0.5**0.5, 0.3**0.5])
    assert hot.tolist() == pytest.approx((expected / expected.sum()).tolist(), abs=1e-6)


def test_sampling_frequencies_and_transformers_reference() -> None:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=gen) * 3
    ours = truncated_distribution(logits, top_k=10, top_p=0.95)
    warped = TopPLogitsWarper(0.95)(None, TopKLogitsWarper(10)(None, logits.clone()))
    assert torch.allclose(ours, torch.softmax(warped, dim=-1), atol=1e-6)
    # empirical frequencies of the sampler match the distribution
    n = 20000
    rows = logits[:1].expand(n, -1)
    tokens, _ = sample_top_k_top_p(rows, torch.rand(n, generator=gen), top_k=10, top_p=0.95)
    freq = torch.bincount(tokens, minlength=300).float() / n
    assert (freq - ours[0]).abs().max().item() < 0.015


def test_chunked_topk_equals_torch_topk() -> None:
    gen = torch.Generator().manual_seed(1)
    for vocab in (49152, 50257):  # a multiple of the chunk size and GPT-2's odd size
        logits = torch.randn(6, vocab, generator=gen)
        values, index = topk_values(logits, 10)
        ref_values, _ = torch.topk(logits, 10)
        assert torch.equal(values, ref_values)
        assert torch.equal(logits.gather(1, index), values)


def test_chunked_logsumexp_equals_torch_bit_for_bit() -> None:
    """The sampler's log-probabilities and margins rest on it: the same fp32 values as the plain expression, for
    bf16 and fp32 logits, row counts around the chunk size, and rows with infinite entries."""
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.bfloat16, torch.float32):
        for rows in (1, 3, 31, 32, 33, 70):
            logits = (torch.randn(rows, 4099, generator=gen) * 4).to(dtype)
            if rows >= 3:
                logits[1] = float("-inf")  # every token masked
                logits[2, 5] = float("inf")
            got = logsumexp_rows(logits, chunk=32)
            assert got.dtype == torch.float32
            assert torch.equal(got, torch.logsumexp(logits.float(), dim=-1))
    assert logsumexp_rows(torch.zeros(0, 10)).shape == (0,)


def test_fastest_capacity_is_the_smallest_within_five_percent_of_the_best() -> None:
    from engine.sampling.hf import fastest_capacity

    assert fastest_capacity({1: 480.0, 2: 964.0, 4: 1009.0, 8: 1016.0, 16: 1219.0, 20: 1417.0}) == 20
    assert fastest_capacity({1: 498.0, 8: 969.0, 16: 1009.0, 20: 948.0}) == 8  # 969 is within 5% of 1009
    assert fastest_capacity({1: 100.0, 2: 100.0}) == 1  # a tie: the smaller batch
    assert fastest_capacity({4: 700.0}) == 4


def test_question_seed_is_stable_and_distinct() -> None:
    assert question_seed(0, 7) == question_seed(0, 7)
    assert len({question_seed(s, k) for s in range(3) for k in range(50)}) == 150


def _drive(tuner: ThreadTuner, cost: dict[int, float], steps: int) -> list[int]:
    chosen = []
    for _ in range(steps):
        threads = tuner.threads_for_step()
        chosen.append(threads)
        tuner.record(cost[threads], rows=10)
    return chosen


def test_thread_tuner_keeps_the_faster_option(monkeypatch) -> None:
    # two threads three times faster (an idle machine): one trial of a single thread, then rarer trials
    tuner = ThreadTuner(2, trial=2, period=4, max_period=16, first_trial=3, start=2, skip_busy=False)
    chosen = _drive(tuner, {2: 1.0, 1: 3.0}, 40)
    assert chosen[:5] == [2, 2, 2, 1, 1]
    trials = [i for i, t in enumerate(chosen) if t == 1]
    assert trials == [3, 4, 13, 30]  # later trials are one step; the period doubles (8, 16) while the choice holds
    # a busy machine: one thread is faster, the tuner switches and stays
    chosen = _drive(ThreadTuner(2, trial=2, period=4, first_trial=3, start=2, skip_busy=False), {2: 5.0, 1: 1.0}, 20)
    assert chosen[:9] == [2, 2, 2, 1, 1, 1, 1, 1, 1] and chosen.count(2) <= 6  # later trials of 2 are rare
    # starting on one thread (a busy machine), an idle machine's two threads still win at the first trial
    chosen = _drive(ThreadTuner(2, trial=2, period=4, first_trial=3, start=1, skip_busy=False), {2: 1.0, 1: 3.0}, 8)
    assert chosen == [1, 1, 1, 2, 2, 2, 2, 2]
    # on a machine whose load average says the cores are taken, more threads are not even tried
    monkeypatch.setattr("engine.sampling.threads.os.getloadavg", lambda: (7.0, 7.0, 7.0))
    assert _drive(ThreadTuner(2, first_trial=3), {2: 5.0, 1: 1.0}, 30) == [1] * 30
    monkeypatch.setattr("engine.sampling.threads.os.getloadavg", lambda: (0.2, 0.2, 0.2))
    assert _drive(ThreadTuner(2, first_trial=3), {2: 1.0, 1: 2.0}, 6)[:5] == [2, 2, 2, 1, 1]
    assert _drive(ThreadTuner(2, enabled=False), {2: 5.0, 1: 1.0}, 10) == [2] * 10
    assert _drive(ThreadTuner(1), {1: 1.0}, 5) == [1] * 5


# -- tiny random models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from engine.models import load_tokenizer

    return load_tokenizer("default")


def _tiny(kind: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256)
        model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # peaky next-token distributions, as a trained model has
        for p in model.parameters():
            p.mul_(4.0)
    # make EOS frequent so that rows finish at different steps (the sampler accepts a list of EOS ids)
    model.generation_config.eos_token_id = list(range(0, vocab, 7))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    return _tiny("llama", len(tokenizer))


QUESTIONS = [(11, "Would a pear sink in water?"), (12, "Is the sky green?"), (13, "Can a cat fly?")]


def _run(model, tokenizer, items=QUESTIONS, **kw):
    fused = kw.pop("fused", None)
    threads = kw.pop("threads", None)
    cfg = SamplingConfig(**{"max_new_tokens": 12, "seed": 3, **kw})
    sampler = make_sampler_from_model(model, tokenizer, cfg, fused=fused, threads=threads)
    calls: list[tuple[int, list]] = []
    sampler.sample(list(items), lambda key, paths: calls.append((key, paths)))
    return calls, sampler


def _teacher_forced(model, prompt_ids: list[int], token_ids: list[int]) -> tuple[float, list[float]]:
    """The path's mean log-prob and its per-token margins p(top-1) - p(top-2), by a separate plain forward."""
    with torch.inference_mode():
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]
    top2 = torch.topk(logprobs.exp(), 2, dim=-1).values
    mean = logprobs.gather(-1, torch.tensor(token_ids).unsqueeze(-1)).mean().item()
    return mean, (top2[:, 0] - top2[:, 1]).tolist()


def _expected_branches(model, tokenizer, prompt: list[int], eos: set[int], first_tokens: int = 5) -> list[int]:
    """The top ``first_tokens`` next tokens by a plain forward, special tokens and EOS ids left out."""
    excluded = set(tokenizer.all_special_ids) | eos
    with torch.inference_mode():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()
    ranked = torch.argsort(logits, descending=True).tolist()
    return [t for t in ranked if t not in excluded][:first_tokens]


def _check_paths(model, tokenizer, calls, cfg_max_new=12, first_tokens=5, per_branch=5) -> None:
    eos = set(model.generation_config.eos_token_id)
    questions = dict(QUESTIONS)
    assert sorted(k for k, _ in calls) == sorted(questions)  # once per question
    for key, paths in calls:
        prompt = tokenizer(sampling_prompt(questions[key])).input_ids
        first = _expected_branches(model, tokenizer, prompt, eos, first_tokens)
        assert len(paths) == first_tokens * per_branch
        assert [(p.branch, p.sample) for p in paths] == [(b, s) for b in range(first_tokens) for s in range(per_branch)]
        for p in paths:
            assert p.token_ids[0] == first[p.branch]  # branches in order of the first token's probability
            assert p.branch_token == tokenizer.decode([first[p.branch]])
            assert p.tokens == len(p.token_ids) and 1 <= p.tokens <= cfg_max_new
            assert not eos & set(p.token_ids[1:])  # EOS ends a path and is not part of it
            assert p.text == tokenizer.decode(
                p.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            assert p.perplexity == pytest.approx(math.exp(-p.mean_logprob))
            forced_lp, forced_margins = _teacher_forced(model, prompt, p.token_ids)
            assert p.mean_logprob == pytest.approx(forced_lp, abs=2e-4)
            assert p.margins == pytest.approx(forced_margins, abs=2e-4)  # path confidence's per-token margins


def test_tiny_llama_structure_logprobs_and_determinism(tokenizer, tiny_llama) -> None:
    calls, sampler = _run(tiny_llama, tokenizer, threads=1)
    assert type(sampler).__name__ == "HFSampler"
    _check_paths(tiny_llama, tokenizer, calls)
    lengths = {p.tokens for _k, paths in calls for p in paths}
    assert len(lengths) > 3  # rows really finished at different steps (EOS) and left the batch
    # a fixed seed reproduces everything (the same items, batch size and thread count: the same batches, the
    # same arithmetic); another seed does not
    again, _ = _run(tiny_llama, tokenizer, threads=1)
    assert [[p.token_ids for p in ps] for _k, ps in sorted(again)] == [
        [p.token_ids for p in ps] for _k, ps in sorted(calls)
    ]
    other, _ = _run(tiny_llama, tokenizer, seed=4, threads=1)
    assert [[p.token_ids for p in ps] for _k, ps in sorted(other)] != [
        [p.token_ids for p in ps] for _k, ps in sorted(calls)
    ]


def _token_map(calls):
    return {(k, p.branch, p.sample): (p.token_ids, p.mean_logprob) for k, paths in calls for p in paths}


def test_default_mode_other_batches_keep_the_structure(tokenizer, tiny_llama) -> None:
    """Continuous batching with other batch sizes and neighbours: every question once, all its paths, in
    order (what holds by construction; the texts may differ by a rounding flip, so they are not compared)."""
    for kw in ({"batch_size": 25}, {"batch_size": 50}, {"items": [QUESTIONS[1]]}):
        calls, _ = _run(tiny_llama, tokenizer, **kw)
        keys = sorted(k for k, _p in calls)
        assert keys == sorted(k for k, _t in kw.get("items", QUESTIONS))
        for _key, paths in calls:
            assert [(p.branch, p.sample) for p in paths] == [(b, s) for b in range(5) for s in range(5)]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "generic"])
def test_batch_invariant_paths_do_not_depend_on_the_batch(tokenizer, tiny_llama, fused) -> None:
    """sampling.batch_invariant: batch size, order and the other questions change nothing, bit for bit."""
    reference = _token_map(_run(tiny_llama, tokenizer, batch_invariant=True, fused=fused)[0])
    assert len(reference) == 3 * 25
    variants = [
        {"batch_size": 25},  # one question's rows (what the mode decodes anyway)
        {"batch_size": 1024},  # room for all; still one question at a time
        {"items": QUESTIONS[::-1]},  # another order
        {"items": [QUESTIONS[1]]},  # a question alone
        {"items": [(21, "Is a whale a fish?"), QUESTIONS[2], (22, "Do owls sleep during the day, mostly?")]},
    ]
    for kw in variants:
        got = _token_map(_run(tiny_llama, tokenizer, batch_invariant=True, fused=fused, **kw)[0])
        shared = set(got) & set(reference)
        assert shared and {k: got[k] for k in shared} == {k: reference[k] for k in shared}, kw


def test_batch_invariant_structure_logprobs_and_stop(tokenizer, tiny_llama) -> None:
    """The batch-invariant loop keeps the sampler's contract: branches, EOS, lengths, teacher-forced log-probs,
    one ``on_done`` per question, early stop, one-token paths."""
    calls, sampler = _run(tiny_llama, tokenizer, batch_invariant=True)
    _check_paths(tiny_llama, tokenizer, calls)
    assert len({p.tokens for _k, paths in calls for p in paths}) > 3  # rows ended at different steps
    assert sampler.question_capacity == 1 and sampler.stats["decoded_tokens"] > 0
    one, _ = _run(tiny_llama, tokenizer, max_new_tokens=1, batch_invariant=True)
    _check_paths(tiny_llama, tokenizer, one, cfg_max_new=1)
    cfg = SamplingConfig(max_new_tokens=12, seed=3, batch_invariant=True)
    seen: list[int] = []
    make_sampler_from_model(tiny_llama, tokenizer, cfg).sample(
        QUESTIONS, lambda key, paths: seen.append(key), should_stop=lambda: len(seen) >= 1
    )
    assert seen == [11]
    # a question's rows over sampling.max_batch_memory_mb: the one-line error (no smaller batch to back off to)
    tight = SamplingConfig(max_new_tokens=12, seed=3, batch_invariant=True, max_batch_memory_mb=1e-4)
    with pytest.raises(UserError, match="the 25 paths of one question do not fit in memory"):
        make_sampler_from_model(tiny_llama, tokenizer, tight).sample(QUESTIONS, lambda key, paths: None)


def test_gpt2_through_the_generic_decoder(tokenizer) -> None:
    model = _tiny("gpt2", len(tokenizer))
    calls, sampler = _run(model, tokenizer, first_tokens=3, per_branch=2, max_new_tokens=10)
    assert len(calls) == 3
    _check_paths(model, tokenizer, calls, cfg_max_new=10, first_tokens=3, per_branch=2)


def test_on_done_once_per_question_and_should_stop(tokenizer, tiny_llama) -> None:
    cfg = SamplingConfig(max_new_tokens=12, seed=3, batch_size=25)
    sampler = make_sampler_from_model(tiny_llama, tokenizer, cfg)
    seen: list[int] = []
    sampler.sample(QUESTIONS, lambda key, paths: seen.append(key), should_stop=lambda: len(seen) >= 1)
    assert seen == [11]  # stopped after the first question; the others were never reported
    seen.clear()
    sampler.sample([], lambda key, paths: seen.append(key))
    assert seen == []


def test_one_token_paths_are_the_branch_tokens(tokenizer, tiny_llama) -> None:
    calls, _ = _run(tiny_llama, tokenizer, max_new_tokens=1)
    _check_paths(tiny_llama, tokenizer, calls, cfg_max_new=1)
    assert all(p.tokens == 1 for _k, paths in calls for p in paths)


@pytest.mark.parametrize(
    ("dtype", "extra"),
    [("float32", 40), ("float32", 2), ("bfloat16", 40), ("bfloat16", 2)],
    ids=["fp32-sliced", "fp32-full-length", "bf16-sliced", "bf16-full-length"],
)
def test_fused_packed_decoder_step_equals_the_model_forward(tokenizer, tiny_llama, dtype, extra) -> None:
    """Both key layouts (transposed in fp32, plain in bf16) and both attention lengths (a slice of the cache, the
    whole cache once the rows fill more than half of it)."""
    import copy

    from engine.sampling.decoders import FusedLlamaDecoder, HFDecoder, make_decoder

    model = copy.deepcopy(tiny_llama).to(getattr(torch, dtype))
    # bf16 rounds every product to 8 bits of mantissa: ~1% of a logit after the layers (a wrong layout or
    # position is off by whole units)
    atol, rtol = (1e-4, 1e-5) if dtype == "float32" else (0.25, 0.02)
    prompt = tokenizer(sampling_prompt("Is the sky green?")).input_ids
    max_len = len(prompt) + extra
    with torch.inference_mode():
        out = model(torch.tensor([prompt]), use_cache=True)
        layer_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        fused = make_decoder(model, 8, max_len, fused=True, pack=True)
        plain = make_decoder(model, 8, max_len, fused=False)
        assert fused.keys_transposed is (dtype == "float32")
        assert isinstance(fused, FusedLlamaDecoder) and isinstance(plain, HFDecoder)
        tokens = torch.tensor([5, 6, 7, 8])
        positions = torch.full((4,), len(prompt))
        for dec in (fused, plain):
            dec.load_prompt(torch.arange(4), layer_kv)
            dec.move_rows(torch.tensor([3]), torch.tensor([0]))  # compaction keeps rows intact
        steps = []
        for dec in (fused, plain):
            first = dec.step(tokens, positions, len(prompt) + 1)
            second = dec.step(tokens.flip(0), positions + 1, len(prompt) + 2)
            steps.append((first, second))
        # the same tokens through the model's own forward on the whole sequence
        full = model(torch.tensor([prompt + [5, 8], prompt + [8, 5]])).logits[:, -2:].float()
    for first, second in steps:
        assert torch.allclose(first[[0, 3]].float(), full[:, 0], atol=atol, rtol=rtol)
        assert torch.allclose(second[[0, 3]].float(), full[:, 1], atol=atol, rtol=rtol)


def test_packed_linear_matches_f_linear() -> None:
    from engine.sampling.decoders import Linear, packed_gemm_available

    weight, bias = torch.randn(96, 32), torch.randn(96)
    packed = Linear(weight, bias, pack=packed_gemm_available(torch.float32, torch.device("cpu")))
    for rows in (1, 5, 40):
        x = torch.randn(rows, 32)
        assert torch.allclose(packed(x), torch.nn.functional.linear(x, weight, bias), atol=1e-5)
        res = torch.randn(rows, 96)
        assert torch.allclose(Linear(weight, None, True).add_to(res.clone(), x), res + x @ weight.T, atol=1e-5)


# -- the real bundled student ------------------------------------------------------------------------------------


@pytest.mark.model
def test_real_student_on_strategyqa(student) -> None:
    model, tokenizer = student
    dataset_file, split_file = rt_files("strategy_qa")
    rows = json.loads(dataset_file.read_text())
    train = json.loads(split_file.read_text())["train"]
    items = [(i, rows[i]["question"]) for i in train[:2]]
    cfg = SamplingConfig(max_new_tokens=16, seed=0)
    sampler = make_sampler_from_model(model, tokenizer, cfg)
    calls: list[tuple[int, list]] = []
    sampler.sample(items, lambda key, paths: calls.append((key, paths)))
    assert sorted(k for k, _ in calls) == [i for i, _ in items]
    eos = {tokenizer.eos_token_id}
    special = set(tokenizer.all_special_ids)
    raw_top_has_special = []
    for key, paths in calls:
        prompt = tokenizer(sampling_prompt(rows[key]["question"])).input_ids
        first = _expected_branches(model, tokenizer, prompt, eos)
        assert not special & set(first)
        with torch.inference_mode():
            raw_top = torch.topk(model(torch.tensor([prompt])).logits[0, -1], 5).indices.tolist()
        raw_top_has_special.append(bool(special & set(raw_top)))
        assert len(paths) == 25
        for p in paths:
            assert p.token_ids[0] == first[p.branch]
            assert "<|im_end|>" not in p.branch_token
            assert p.tokens == len(p.token_ids) <= 16 and not eos & set(p.token_ids[1:])
        # one teacher-forced pass (right-padded) over the first sample of every branch and the longest path,
        # compared with the numbers the sampler took from its own forward passes
        checked = [p for p in paths if p.sample == 0] + [max(paths, key=lambda p: p.tokens)]
        width = max(p.tokens for p in checked)
        batch = torch.full((len(checked), len(prompt) + width), tokenizer.pad_token_id)
        for i, p in enumerate(checked):
            batch[i, : len(prompt) + p.tokens] = torch.tensor(prompt + p.token_ids)
        with torch.inference_mode():
            lp = torch.log_softmax(model(batch).logits.float(), dim=-1)
        for i, p in enumerate(checked):
            steps = lp[i, len(prompt) - 1 : len(prompt) - 1 + p.tokens]
            forced = steps.gather(-1, torch.tensor(p.token_ids).unsqueeze(-1)).mean().item()
            assert p.mean_logprob == pytest.approx(forced, abs=1e-4)
            assert p.perplexity == pytest.approx(math.exp(-forced), rel=1e-3)
        assert len({tuple(p.token_ids) for p in paths}) > 10  # really sampled, not 25 copies
    # <|im_end|> (the instruct model's EOS) ranks in the raw top five here, and still starts no branch
    assert any(raw_top_has_special)


@pytest.mark.model
def test_real_student_batch_invariant_paths_do_not_depend_on_the_batch(student) -> None:
    """The bundled student, 25 paths a question: a question sampled with two others, alone, and in another order
    gets bit-identical paths in the batch-invariant mode."""
    model, tokenizer = student
    dataset_file, split_file = rt_files("strategy_qa")
    rows = json.loads(dataset_file.read_text())
    train = json.loads(split_file.read_text())["train"]
    items = [(i, rows[i]["question"]) for i in train[:3]]
    cfg = SamplingConfig(max_new_tokens=12, seed=1, batch_invariant=True)

    def run(its) -> dict:
        got: dict = {}
        sampler = make_sampler_from_model(model, tokenizer, cfg)
        sampler.sample(its, lambda key, paths: got.update({(key, p.branch, p.sample): p for p in paths}))
        return {k: (p.token_ids, p.text, p.mean_logprob) for k, p in got.items()}

    together = run(items)
    assert len(together) == 3 * 25
    alone = run(items[1:2])
    reordered = run(items[::-1][:2])
    assert alone == {k: v for k, v in together.items() if k[0] == items[1][0]}
    assert reordered == {k: v for k, v in together.items() if k[0] in (items[1][0], items[2][0])}


# -- backends: choice, gating, the vLLM backend's GPU-free parts -------------------------------------------------


def test_backend_resolution() -> None:
    assert resolve_backend("hf", "cpu") == "hf"
    assert resolve_backend("auto", "cpu") == "hf"
    if not vllm_available():
        assert resolve_backend("auto", "cuda") == "hf"


@pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
def test_vllm_backend_without_vllm_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="vllm"):
        resolve_backend("vllm", "cuda")
    # make_sampler refuses before loading any model
    with pytest.raises(UserError, match="vllm is not installed"):
        make_sampler(StudentConfig(model="/nonexistent/model", device="cpu"), SamplingConfig(backend="vllm"))


def test_batch_invariant_is_the_transformers_backends() -> None:
    assert SamplingConfig().batch_invariant is False
    # refused before any model is loaded
    with pytest.raises(UserError, match="batch_invariant is a mode of the transformers backend"):
        make_sampler(
            StudentConfig(model="/nonexistent/model", device="cpu"),
            SamplingConfig(backend="vllm", batch_invariant=True),
        )


def test_vllm_request_parameters() -> None:
    from engine.sampling.vllm_backend import branch_seed, continuation_kwargs, first_token_kwargs

    cfg = SamplingConfig(max_new_tokens=128, seed=5)
    assert first_token_kwargs(cfg) == {"n": 1, "max_tokens": 1, "temperature": 0.0, "logprobs": 5}
    assert first_token_kwargs(cfg, excluded=3)["logprobs"] == 8  # room to skip 3 special tokens
    assert first_token_kwargs(cfg, excluded=400)["logprobs"] == 5 + 16  # capped lookahead
    kw = continuation_kwargs(cfg, branch_seed(5, 42, 1))
    assert kw == {
        "n": 5,
        "top_k": 10,
        "top_p": 0.95,
        "temperature": 1.0,
        "max_tokens": 127,  # max_new_tokens counts the branch token
        "logprobs": 2,  # the top two of every position: the margins of path confidence
        "seed": branch_seed(5, 42, 1),
    }
    assert branch_seed(5, 42, 1) == branch_seed(5, 42, 1) != branch_seed(5, 42, 2)


def test_vllm_results_become_paths() -> None:
    from engine.sampling.vllm_backend import branches_from_first_output, paths_from_branch_outputs

    lp = lambda value, rank=None: SimpleNamespace(logprob=value, rank=rank)  # noqa: E731
    first = SimpleNamespace(
        outputs=[SimpleNamespace(logprobs=[{7: lp(-0.5, 1), 9: lp(-2.0, 3), 8: lp(-1.0, 2)}], token_ids=[7])]
    )
    branches = branches_from_first_output(first, 2)
    assert branches == [(7, -0.5), (8, -1.0)]
    assert branches_from_first_output(first, 2, excluded={7}) == [(8, -1.0), (9, -2.0)]  # special token skipped
    eos = {2}
    out_a = SimpleNamespace(
        outputs=[
            SimpleNamespace(
                token_ids=[5, 6, 2], logprobs=[{5: lp(-1.0)}, {6: lp(-3.0)}, {2: lp(-0.1)}], finish_reason="stop"
            ),
            SimpleNamespace(token_ids=[4, 4], logprobs=[{4: lp(-0.2)}, {4: lp(-0.4)}], finish_reason="length"),
        ]
    )
    out_b = SimpleNamespace(
        outputs=[
            SimpleNamespace(token_ids=[2], logprobs=[{2: lp(-0.3)}], finish_reason="stop"),
            SimpleNamespace(token_ids=[3], logprobs=[{3: lp(-1.5)}], finish_reason="length"),
        ]
    )
    paths = paths_from_branch_outputs(branches, [out_a, out_b], eos, decode=lambda ids: "|".join(map(str, ids)))
    assert [(p.branch, p.sample, p.token_ids) for p in paths] == [
        (0, 0, [7, 5, 6]),  # EOS stripped
        (0, 1, [7, 4, 4]),
        (1, 0, [8]),  # EOS right after the branch token
        (1, 1, [8, 3]),
    ]
    assert paths[0].mean_logprob == pytest.approx((-0.5 - 1.0 - 3.0) / 3)
    assert paths[2].mean_logprob == pytest.approx(-1.0)
    assert paths[0].text == "7|5|6" and paths[0].branch_token == "7" and paths[0].tokens == 3
    assert paths[1].perplexity == pytest.approx(math.exp((0.5 + 0.2 + 0.4) / 3))
    assert all(p.margins is None for p in paths)  # no ranks in these tables: no margins, no confidence


def test_vllm_ranked_tables_give_margins() -> None:
    from engine.sampling.vllm_backend import paths_from_branch_outputs, ranked_margin

    lp = lambda value, rank=None: SimpleNamespace(logprob=value, rank=rank)  # noqa: E731
    first = {7: lp(math.log(0.6), 1), 8: lp(math.log(0.25), 2), 9: lp(math.log(0.1), 3)}
    assert ranked_margin(first) == pytest.approx(0.35)
    assert ranked_margin({7: lp(-0.1, 1)}) is None
    # the sampled token (rank 3) besides the top two; then a position where it is the top one
    cont = [
        {5: lp(math.log(0.1), 3), 4: lp(math.log(0.5), 1), 6: lp(math.log(0.3), 2)},
        {6: lp(math.log(0.9), 1), 3: lp(math.log(0.05), 2)},
    ]
    out = SimpleNamespace(outputs=[SimpleNamespace(token_ids=[5, 6], logprobs=cont, finish_reason="length")])
    paths = paths_from_branch_outputs([(7, math.log(0.6))], [out], {2}, decode=str, first_margin=0.35)
    assert paths[0].token_ids == [7, 5, 6]
    assert paths[0].margins == pytest.approx([0.35, 0.2, 0.85])
