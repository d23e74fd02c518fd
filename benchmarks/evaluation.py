"""Benchmark of evaluation: greedy decoding on the engine's decoder against batched ``model.generate``, one run.

The model is a trained checkpoint: ``--checkpoint DIR`` (a directory ``load_trained`` reads), else one trained
here first -- the bundled student fine-tuned for one epoch on the first 64 correct recorded text-davinci-002
StrategyQA rationales (fp32, batch 8, lr 1e-4, the training benchmark's plain loop), so that it writes
rationales of realistic length instead of the base model's few words. The questions are the first
``--questions`` StrategyQA test questions (split order) in the evaluation prompt, ``--tokens`` new tokens at most.

- baseline: today's evaluation before this engine, ``model.generate`` greedy in left-padded batches of 32
  (``engine.evaluation.generate.greedy_batches``) in fp32;
- engine: ``engine.evaluation.decode.greedy_engine``, 64 rows, in the dtype the eval stage computes in
  (``engine.evaluation.stage.eval_dtype``: fp32 on a CPU);
- agreement: the engine in fp32 against the fp32 baseline, the share of questions whose outputs are
  token-identical;
- where bf16 is the faster dtype here (``engine.precision``, what sampling uses): the baseline and the engine in
  bf16 too, and a metrics check -- accuracy and format rate of the engine in bf16 against the engine in fp32 on
  ``--metrics-questions`` test questions (default 200), in points, and the share of identical outputs: the
  evidence for evaluating in fp32 on a CPU.

Where bf16 is fast, the engine in fp32 takes the LM head's argmax from bf16 candidates rescored in fp32
(``engine.evaluation.greedy_head``); a third engine run with the plain fp32 head measures what that gives, and
the output says how many rows needed the full fp32 product.

Roofline: 2 x (parameters of the decoder's linear layers) FLOPs per token, prompt and generated, plus 2 x (LM
head parameters) per generated token (a prefill applies the head to the last position only), each part against
the GEMM rate, measured in this run (``benchmarks/sampling.py``'s square matmul), of the dtype it computes in.

    .venv/bin/python benchmarks/evaluation.py [--questions 64] [--tokens 128] [--metrics-questions 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def test_items(n: int) -> list[tuple[int, str]]:
    from engine.prompts import training_prompt

    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    split = json.loads((DATA / "split" / "strategy_qa__default.json").read_text())
    return [(i, training_prompt(rows[i]["question"])) for i in split["test"][:n]]


def golds() -> dict[int, str]:
    """Gold answers as the workspace stores them (``normalize_gold``: the dataset's booleans as yes/no)."""
    from engine.answers import normalize_gold

    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    return {i: normalize_gold(r["answer"], "yes_no") for i, r in enumerate(rows)}


def train_checkpoint(out: Path) -> None:
    """One epoch of the plain fp32 loop on 64 recorded rationales; saved with its tokenizer."""
    from benchmarks.training import Baseline, build_samples
    from engine.models import load_model
    from engine.training.trainer import encode_samples

    model, tokenizer = load_model("default", device="cpu", dtype="float32")
    data, _dropped = encode_samples(tokenizer, build_samples(64), 256)
    loop = Baseline(model, data, batch=8, lr=1e-4, seed=0, pad_id=tokenizer.pad_token_id)
    for _ in range(len(loop.batches)):
        loop.step()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def run(model, tokenizer, items, method: str, tokens: int) -> tuple[dict, float, dict]:
    """``method``: ``generate``, ``engine``, or ``engine_fp32_head`` (the engine with the plain fp32 LM head
    instead of :mod:`engine.evaluation.greedy_head`'s bf16 candidates)."""
    from engine.evaluation.decode import greedy_engine
    from engine.evaluation.generate import greedy_batches

    stats: dict = {}
    started = time.perf_counter()
    if method.startswith("engine"):
        batches = greedy_engine(
            model,
            tokenizer,
            items,
            max_new_tokens=tokens,
            rows=64,
            approx_head=method == "engine",
            stats=stats,
        )
    else:
        batches = greedy_batches(model, tokenizer, items, max_new_tokens=tokens, batch_size=32)
    outputs = {g.key: g for batch in batches for g in batch}
    return outputs, time.perf_counter() - started, stats


def metrics(outputs: dict, gold: dict[int, str], tokenizer) -> dict[str, float]:
    from engine.evaluation.metrics import aggregate, score_output

    def tok(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    scored = [score_output(g.text, gold[k], "yes_no", tok, output_tokens=g.token_ids) for k, g in outputs.items()]
    agg = aggregate(scored)
    return {"acc": 100 * float(agg["acc"] or 0), "fmt": 100 * float(agg["fmt"] or 0), "n": int(agg["n"] or 0)}


def finetune_erased_share(trained, dtype_name: str, base_model: str = "default") -> float:
    """Of the weights that training changed (fp32, against ``base_model``, the model it was trained from), the
    share that round to the same ``dtype_name`` value as before training: fine-tuning that a model cast to that
    dtype no longer has."""
    import torch

    from engine.models import load_model

    base, _tok = load_model(base_model, device="cpu", dtype="float32")
    dtype = getattr(torch, dtype_name)
    changed = erased = 0
    trained_params = dict(trained.named_parameters())
    for name, before in base.named_parameters():
        after = trained_params[name]
        moved = before != after
        changed += int(moved.sum())
        erased += int((moved & (before.to(dtype) == after.to(dtype))).sum())
    return erased / max(1, changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--metrics-questions", type=int, default=200, help="0 skips the metrics check")
    parser.add_argument("--checkpoint", help="a trained checkpoint directory (default: train one first)")
    parser.add_argument(
        "--base", default="default", help="the model the checkpoint was trained from (default: the bundled student)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.sampling import matmul_rates
    from engine.precision import describe, inference_dtype_name
    from engine.training.checkpoints import load_trained

    tmp = tempfile.TemporaryDirectory(prefix="sert-eval-bench-")
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(tmp.name) / "checkpoint"
    if not args.checkpoint:
        log("training a checkpoint: 64 recorded rationales, one epoch ...")
        t = time.perf_counter()
        train_checkpoint(ckpt)
        log(f"  {time.perf_counter() - t:.0f} s")
    from engine.config import ExperimentConfig
    from engine.evaluation.stage import eval_dtype

    dtype = eval_dtype(ExperimentConfig())  # what the eval stage computes in on this machine (auto)
    fast = inference_dtype_name("cpu")  # what sampling computes in: bf16 where it is measurably faster
    reason = f"the eval stage's auto on a CPU is {dtype} (engine.evaluation.stage.eval_dtype); {describe('cpu', fast)}"
    log(f"engine dtype: {reason}")
    items = test_items(args.questions)
    gold = golds()
    runs: dict[str, dict] = {}
    models = {name: load_trained(ckpt, device="cpu", dtype=name) for name in {"float32", dtype, fast}}

    def timed(name: str, method: str, dt: str, its) -> dict:
        model, tokenizer = models[dt]
        log(f"running {name} ({method}, {dt}, {len(its)} questions) ...")
        with torch.inference_mode():
            outputs, seconds, stats = run(model, tokenizer, its, method, args.tokens)
        prompt_tokens = sum(len(tokenizer(p).input_ids) for _k, p in its)
        new_tokens = sum(len(g.token_ids) for g in outputs.values())
        runs[name] = {
            "method": method,
            "dtype": dt,
            "questions": len(its),
            "seconds": seconds,
            "q_s": len(its) / seconds,
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            **({"steps": stats["steps"]} if stats else {}),
            **(
                {"head_fallback_share": stats["head_fallback_rows"] / max(1, stats["head_rows"])}
                if "head_rows" in stats
                else {}
            ),
        }
        return outputs

    base = timed("baseline", "generate", "float32", items)
    eng = timed("engine", "engine", dtype, items)
    eng32_name = "engine" if dtype == "float32" else "engine_fp32"
    eng32 = eng if dtype == "float32" else timed(eng32_name, "engine", "float32", items)
    if "head_fallback_share" in runs[eng32_name]:
        # the bf16-candidate LM head against the plain fp32 head, same decoder, same run
        timed("engine_fp32_head", "engine_fp32_head", "float32", items)
    if fast != dtype:  # the faster dtype, for what it would give (and cost: the metrics check below)
        timed(f"baseline_{fast}", "generate", fast, items)
        timed(f"engine_{fast}", "engine", fast, items)
    agreement = sum(base[k].token_ids == eng32[k].token_ids for k in base) / len(base)

    check = None
    if args.metrics_questions and fast != "float32":
        its = test_items(args.metrics_questions)
        log(f"metrics check: engine {fast} vs engine fp32 on {len(its)} questions ...")
        model32, tok = models["float32"]
        with torch.inference_mode():
            out32 = run(model32, tok, its, "engine", args.tokens)[0]
            outd = run(models[fast][0], tok, its, "engine", args.tokens)[0]
        ref, got = metrics(out32, gold, tok), metrics(outd, gold, tok)
        check = {
            "questions": len(its),
            "finetune_erased_share": finetune_erased_share(model32, fast, args.base),
            "identical_outputs": sum(out32[k].token_ids == outd[k].token_ids for k in out32) / len(out32),
            "fp32": ref,
            fast: got,
            "acc_diff_points": got["acc"] - ref["acc"],
            "fmt_diff_points": got["fmt"] - ref["fmt"],
        }

    rates = matmul_rates()
    linears = [m for m in models["float32"][0].modules() if isinstance(m, torch.nn.Linear)]
    head = models["float32"][0].get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for m in linears) - head

    def head_dtype(r: dict) -> str:
        """The LM head's dtype in a run: bf16 where the engine took its argmax from bf16 candidates."""
        return "bfloat16" if "head_fallback_share" in r else r["dtype"]

    def flops(run_name: str) -> tuple[float, float]:
        """(FLOPs, seconds at the roofline): the decoder on every token, the LM head on the generated ones (a
        prefill applies it to a prompt's last position only), each at the rate of the dtype it computes in."""
        r = runs[run_name]
        body_flops, head_flops = 2 * body * (r["prompt_tokens"] + r["new_tokens"]), 2 * head * r["new_tokens"]
        ideal = body_flops / rates[r["dtype"]] / 1e9 + head_flops / rates[head_dtype(r)] / 1e9
        return body_flops + head_flops, ideal

    def gflops(run_name: str) -> float:
        return flops(run_name)[0] / runs[run_name]["seconds"] / 1e9

    def roofline_share(run_name: str) -> float:
        return flops(run_name)[1] / runs[run_name]["seconds"]

    achieved = gflops("engine")
    eng = runs["engine"]
    summary = {
        "questions": args.questions,
        "tokens": args.tokens,
        "checkpoint": str(ckpt) if args.checkpoint else "trained here (64 rationales, 1 epoch)",
        "engine_dtype": dtype,
        "engine_dtype_reason": reason,
        "engine_q_s": eng["q_s"],
        "baseline_q_s": runs["baseline"]["q_s"],
        "ratio": eng["q_s"] / runs["baseline"]["q_s"],
        **(
            {
                f"ratio_{fast}": runs[f"engine_{fast}"]["q_s"] / runs["baseline"]["q_s"],
                f"ratio_{fast}_same_dtype": runs[f"engine_{fast}"]["q_s"] / runs[f"baseline_{fast}"]["q_s"],
                f"roofline_share_{fast}": roofline_share(f"engine_{fast}"),
            }
            if fast != dtype
            else {}
        ),
        **(
            {"ratio_plain_head": runs[eng32_name]["q_s"] / runs["engine_fp32_head"]["q_s"]}
            if "engine_fp32_head" in runs
            else {}
        ),
        "agreement": agreement,
        "engine_gflops": achieved,
        "roofline_dtype": dtype,
        "roofline_head_dtype": head_dtype(eng),
        "roofline_gflops": flops("engine")[0] / flops("engine")[1] / 1e9,
        "roofline_share": roofline_share("engine"),
        "matmul_gflops": rates,
        "metrics_check": check,
        "threads": torch.get_num_threads(),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"evaluation benchmark: {args.questions} StrategyQA test questions, <= {args.tokens} new tokens, cpu")
    for name, r in runs.items():
        print(
            f"  {name:<20} {r['method']:<8} {r['dtype']:<8} {r['q_s']:6.2f} questions/s "
            f"({r['new_tokens']} new tokens in {r['seconds']:.1f} s)"
        )
    print(f"  engine / baseline: {summary['ratio']:.2f}x (target >= 4x)")
    if fast != dtype:
        print(
            f"  engine in {fast} / baseline: {summary[f'ratio_{fast}']:.2f}x; against generate in {fast}: "
            f"{summary[f'ratio_{fast}_same_dtype']:.2f}x"
        )
    print(f"  agreement (fp32, token-identical): {100 * agreement:.1f}% (target >= 99%)")
    print(
        f"  engine {achieved:.0f} GFLOP/s = {100 * summary['roofline_share']:.1f}% of the roofline of what it "
        f"computes in, {dtype} (LM head {summary['roofline_head_dtype']}): {summary['roofline_gflops']:.0f} GFLOP/s "
        f"(matmul rates: fp32 {rates['float32']:.0f}, bf16 {rates['bfloat16']:.0f})"
    )
    if "engine_fp32_head" in runs:
        share = runs[eng32_name]["head_fallback_share"]
        print(
            f"  LM head from bf16 candidates: {summary['ratio_plain_head']:.2f}x the plain fp32 head; "
            f"{100 * share:.2f}% of the rows needed the full fp32 product"
        )
    if check:
        print(
            f"  {fast} weights: {100 * check['finetune_erased_share']:.0f}% of the weights training changed round "
            "back to their untrained value"
        )
        print(
            f"  {fast} on {check['questions']} questions: acc {check[fast]['acc']:.1f} vs {check['fp32']['acc']:.1f} "
            f"(fp32), fmt {check[fast]['fmt']:.1f} vs {check['fp32']['fmt']:.1f}; identical outputs "
            f"{100 * check['identical_outputs']:.0f}% (target: metrics within 0.5 points)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
