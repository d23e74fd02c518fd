"""Training throughput: the SFT engine against a plain fp32 padded loop, on the same real samples, in one run.

Samples: the first ``--samples`` StrategyQA train questions (split order) whose recorded text-davinci-002
rationale is correct (``../shared/data/reasoning-teacher``), in the distillation format
``Question: {q}. Answer: Let's think step by step. {R} So the answer is {a}.`` (prompt masked). No database.

- baseline: fp32, a random order in padded batches of ``--batch`` (padded to the longest sample of the
  batch), ``model(input_ids, attention_mask, labels).loss`` (logits at every position), ``torch.optim.AdamW``
  with its default (foreach) implementation, linear schedule, grad clipping 1.0;
- engine: ``engine.training.trainer.SFTEngine`` with the stage's defaults: length-grouped batches (no
  cross-sample attention), logits only at labelled positions, fused AdamW, bf16 autocast where the hardware
  has bf16 arithmetic (``--bf16 auto``).

Both start from the same weights and seed, see every sample once, and run step by step in alternation, so
that load from other processes on a shared machine hits both alike. Reported: non-padding tokens/s of each
and the ratio; the loss (token-weighted mean cross-entropy over the completion tokens of the whole run, i.e.
after the same samples, in different batch orders), which must agree within noise, and the fp32 loss of both
trained models on the next ``--heldout`` samples, which neither saw; the engine's model FLOP/s (6 x
parameters x tokens) as a share of the rate of a large matmul, probed before every step pair, in the dtype the
engine's matmuls compute in: bf16 when it trains under bf16 autocast, fp32 otherwise (``roofline_dtype`` and
``roofline_reason`` say which and why; the baseline is fp32 throughout).

    .venv/bin/python benchmarks/training.py [--samples 200] [--batch 8] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def build_samples(n: int):
    from engine import answers
    from engine.prompts import training_prompt
    from engine.training.datasets import Sample, distill_completion, strip_stated_answer

    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    split = json.loads((DATA / "split" / "strategy_qa__default.json").read_text())
    teacher = json.loads((DATA / "teacher-text-davinci-002" / "D_strategy_qa.json").read_text())["data"]
    out = []
    for index in split["train"]:
        recs = teacher.get(str(index))
        if not recs:
            continue
        gold = answers.normalize_gold(rows[index]["answer"], "yes_no")
        said = answers.parse_answer("Therefore, the answer is" + recs[0]["completion"], "yes_no")
        rationale = strip_stated_answer(recs[0]["reasoning_completion"])
        if said != gold or not rationale:
            continue
        out.append(Sample(training_prompt(rows[index]["question"]), distill_completion(rationale, gold)))
        if len(out) == n:
            break
    return out


class Baseline:
    """The straightforward loop: padded random batches, full logits, foreach AdamW, fp32."""

    def __init__(self, model, data, batch: int, lr: float, seed: int, pad_id: int):
        import random

        import torch
        from transformers import get_scheduler

        self.model, self.data, self.pad_id = model, data, pad_id
        order = list(range(len(data)))
        random.Random(seed).shuffle(order)
        self.batches = [order[i : i + batch] for i in range(0, len(order), batch)]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.scheduler = get_scheduler(
            "linear", self.optimizer, num_warmup_steps=0, num_training_steps=len(self.batches)
        )
        self.step_index = 0

    def step(self) -> tuple[float, int, int, float]:
        """One optimizer step: (loss sum over label tokens, label tokens, non-padding tokens, seconds)."""
        import torch

        from engine.training.trainer import collate

        t0 = time.perf_counter()
        self.model.train()
        samples = [self.data[i] for i in self.batches[self.step_index]]
        ids, mask, labels = collate(samples, self.pad_id, "cpu")
        if mask is None:
            mask = torch.ones_like(ids)
        out = self.model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        n_labels = sum(s.n_labels for s in samples)
        return (
            float(out.loss.detach()) * n_labels,
            n_labels,
            sum(len(s.input_ids) for s in samples),
            time.perf_counter() - t0,
        )


def heldout_loss(model, data, pad_id: int) -> float:
    """Token-weighted mean cross-entropy over the completion tokens of ``data``, fp32, no grad."""
    import torch

    from engine.training.trainer import collate, token_loss_sum

    model.eval()
    total = labels = 0.0
    with torch.no_grad():
        for start in range(0, len(data), 8):
            part = data[start : start + 8]
            ids, mask, lab = collate(part, pad_id, "cpu")
            total += float(token_loss_sum(model, ids, mask, lab, selective=False))
            labels += sum(s.n_labels for s in part)
    return total / labels


def matmul_gflops(dtype: str = "float32", seconds: float = 0.3) -> float:
    """GFLOP/s of a 1024x1024x1024 matmul in ``dtype`` on this machine right now (a probe taken before every
    step pair: on a shared machine the attainable rate moves with the load)."""
    import torch

    a = torch.randn(1024, 1024, dtype=getattr(torch, dtype))
    b = torch.randn(1024, 1024, dtype=getattr(torch, dtype))
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9


def _measured() -> str:
    from engine.precision import cpu_rates

    r = cpu_rates()
    return f"measured GEMM {r.bfloat16:.0f} GFLOP/s in bf16 vs {r.float32:.0f} in fp32 on this CPU"


def roofline_dtype(engine_bf16: bool, setting: str) -> tuple[str, str]:
    """(dtype, why): the dtype of the engine's matmuls, whose matmul rate is its roofline."""
    if engine_bf16:
        why = "--bf16 on" if setting == "on" else f"--bf16 auto; {_measured()}"
        return "bfloat16", f"the engine trains under bf16 autocast ({why}): its matmuls run in bf16"
    why = "--bf16 off" if setting == "off" else f"--bf16 auto; {_measured()}"
    return "float32", f"the engine trains in fp32 without autocast ({why})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heldout", type=int, default=40, help="samples after the training ones, for a held-out loss")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--model", default="default", help="student model (default: the bundled SmolLM2-135M)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from engine.config import TrainConfig
    from engine.models import load_model
    from engine.training.trainer import SFTEngine, encode_samples

    hf_logging.disable_progress_bar()
    everything = build_samples(args.samples + args.heldout)
    samples, heldout_samples = everything[: args.samples], everything[args.samples :]
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model, device="cpu", dtype="float32")
    data, dropped = encode_samples(tokenizer, samples, args.max_length)
    heldout, _ = encode_samples(tokenizer, heldout_samples, args.max_length)
    base_model = model
    engine_model = copy.deepcopy(model)
    cfg = TrainConfig(batch_size=args.batch, lr=args.lr, epochs=1.0, seed=args.seed, bf16=args.bf16)
    baseline = Baseline(base_model, data, args.batch, args.lr, args.seed, tokenizer.pad_token_id)
    engine = SFTEngine(engine_model, data, cfg, device="cpu", pad_id=tokenizer.pad_token_id)
    steps = len(baseline.batches)
    assert engine.total_steps == steps
    peak_dtype, peak_reason = roofline_dtype(engine.bf16, args.bf16)
    print(f"roofline: {peak_dtype} matmul rate; {peak_reason}", file=sys.stderr, flush=True)

    probes: list[float] = []
    b_loss = b_labels = b_tokens = 0.0
    b_time = e_time = 0.0
    e_loss = e_labels = e_tokens = 0.0
    e_padded = 0
    phases: dict[str, float] = {}
    import resource

    e_user = e_sys = 0.0
    b_padded = sum(max(len(data[i].input_ids) for i in b) * len(b) for b in baseline.batches)
    for i in range(steps):
        probes.append(matmul_gflops(peak_dtype))
        loss_sum, n_labels, tokens, seconds = baseline.step()
        b_loss, b_labels, b_tokens, b_time = b_loss + loss_sum, b_labels + n_labels, b_tokens + tokens, b_time + seconds
        before = resource.getrusage(resource.RUSAGE_SELF)
        st = engine.step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        e_user, e_sys = e_user + after.ru_utime - before.ru_utime, e_sys + after.ru_stime - before.ru_stime
        for name, sec in st.phases.items():
            phases[name] = phases.get(name, 0.0) + sec
        e_loss += st.loss * st.label_tokens
        e_labels += st.label_tokens
        e_tokens += st.tokens
        e_padded += st.padded_tokens
        e_time += st.seconds
        print(  # progress on stderr; stdout carries the result
            f"step {i + 1}/{steps}: baseline {tokens / seconds:7.1f} tok/s loss {loss_sum / n_labels:.4f} | "
            f"engine {st.tokens_per_s:7.1f} tok/s loss {st.loss:.4f}",
            file=sys.stderr,
            flush=True,
        )
    peak = sum(probes) / len(probes)
    n_params = sum(p.numel() for p in engine_model.parameters())
    engine_tok_s = e_tokens / e_time
    result = {
        "baseline_tok_s": round(b_tokens / b_time, 2),
        "engine_tok_s": round(engine_tok_s, 2),
        "ratio": round((e_tokens / e_time) / (b_tokens / b_time), 3),
        "baseline_loss": round(b_loss / b_labels, 4),
        "engine_loss": round(e_loss / e_labels, 4),
        # the same fp32 loss of both trained models on samples neither saw: what "agree within noise" is about
        # (the running losses above average over different batch orders)
        "baseline_heldout_loss": round(heldout_loss(base_model, heldout, tokenizer.pad_token_id), 4),
        "engine_heldout_loss": round(heldout_loss(engine_model, heldout, tokenizer.pad_token_id), 4),
        "heldout_samples": len(heldout),
        "samples": len(data),
        "dropped": dropped,
        "steps": steps,
        "tokens": int(e_tokens),
        "baseline_padding": round(1 - b_tokens / b_padded, 4),
        "engine_padding": round(1 - e_tokens / e_padded, 4),
        "baseline_seconds": round(b_time, 1),
        "engine_seconds": round(e_time, 1),
        "engine_bf16": engine.bf16,
        "engine_selective_logits": engine.selective,
        "engine_gflops": round(6 * n_params * engine_tok_s / 1e9, 1),
        "matmul_gflops": round(peak, 1),
        "roofline_dtype": peak_dtype,
        "roofline_reason": peak_reason,
        "threads": torch.get_num_threads(),
        # where the engine's step time goes, and how much of its CPU time is the kernel's (page faults, futexes)
        "engine_phases": {k: round(v / e_time, 3) for k, v in phases.items()},
        "engine_user_seconds": round(e_user, 1),
        "engine_system_seconds": round(e_sys, 1),
        "engine_system_share": round(e_sys / (e_user + e_sys), 3) if e_user + e_sys else None,
    }
    result["engine_roofline_share"] = round(result["engine_gflops"] / peak, 3) if peak else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{len(data)} samples, {steps} steps of {args.batch}, {int(e_tokens)} non-padding tokens "
            f"(padding: baseline {100 * result['baseline_padding']:.1f}%, engine {100 * result['engine_padding']:.1f}%)"
        )
        print(
            f"baseline: {result['baseline_tok_s']:.1f} tokens/s, loss {result['baseline_loss']:.4f}, "
            f"held-out loss {result['baseline_heldout_loss']:.4f}"
        )
        print(
            f"engine:   {result['engine_tok_s']:.1f} tokens/s, loss {result['engine_loss']:.4f}, "
            f"held-out loss {result['engine_heldout_loss']:.4f}"
        )
        print(
            f"ratio {result['ratio']:.2f}x; engine {result['engine_gflops']} GFLOP/s = "
            f"{100 * (result['engine_roofline_share'] or 0):.0f}% of a "
            f"{result['matmul_gflops']} GFLOP/s {peak_dtype} matmul ({peak_reason})"
        )
        parts = ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["engine_phases"].items())
        print(
            f"engine step time: {parts}; CPU time {result['engine_user_seconds']} s user, "
            f"{result['engine_system_seconds']} s system ({100 * (result['engine_system_share'] or 0):.0f}%)"
        )
    return 0 if math.isfinite(result["ratio"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
