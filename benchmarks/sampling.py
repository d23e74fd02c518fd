"""Benchmark of SERT stage-1 sampling: the engine against two `model.generate` baselines, in one run.

Same questions (the first N StrategyQA training questions of ../shared/data in the split file's order), same
seed, 25 paths per question (5 first-token branches x 5 samples, top-k 10, top-p 0.95, temperature 1), at
most ``--tokens`` new tokens per path (the branch token included), three ways:

1. naive: per question, one forward for the branches, then per branch ``model.generate(num_return_sequences=5)``
   in fp32;
2. strong: the branches of all questions left-padded into one ``model.generate`` batch
   (``num_return_sequences=5``), in bf16 where this CPU does bf16 fast, else fp32;
3. the engine (``engine.sampling``, dtype ``auto``);
4. with ``--methods ...,vllm``: vLLM on this CPU (``make vllm-cpu`` builds ``.venv-vllm``), through the product's
   own ``sampling.backend = "vllm"`` sampler (:class:`engine.sampling.vllm_backend.VLLMSampler`, vLLM's offline
   ``LLM.generate``: one 1-token branch request per question with top log-probs, then ``n = 5`` continuations per
   branch with top-k 10, top-p 0.95, prefix caching), in the dtype the engine computes in. Its worker runs in
   ``.venv-vllm``'s interpreter; its model load (vLLM's start and compilation) is outside the timed part, as
   every method's is.

Tokens are counted the same way for all three: per path, the branch token plus every sampled token before the
first EOS. Each method runs in its own child process (its peak resident memory is its own); they run one
after the other in this one invocation, so the ratios compare like with like on a shared machine.

The roofline is 2 x (parameters of the linear layers, LM head included) FLOPs per token against the matmul
rate, measured in this run, of the dtype the engine computes in (``dtype = "auto"`` measures which of bf16 and
fp32 is faster here, :mod:`engine.precision`; the output says what it chose and why). The engine's batch size
is measured too (``sampling.batch_size`` unset), and a separate profiled run of up to 8 of the questions says
where its time goes: matmuls, attention, the sampling ops, prefill, other kernels, host-side bookkeeping.

    python benchmarks/sampling.py [--questions 8] [--tokens 48] [--seed 0] [--json]
    python benchmarks/sampling.py --questions 32 --tokens 128 --methods strong,engine   # the realistic size
    python benchmarks/sampling.py --questions 32 --tokens 128 --methods strong,engine,vllm   # after make vllm-cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def load_questions(n: int) -> list[str]:
    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    split = json.loads((DATA / "split" / "strategy_qa__default.json").read_text())
    return [rows[i]["question"] for i in split["train"][:n]]


def peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2)


def count_generated(gen, eos_ids: set[int]) -> int:
    """Branch token + sampled tokens before the first EOS, summed over rows of ``gen`` [rows, new]."""
    total = 0
    for row in gen.tolist():
        n = 0
        for t in row:
            if t in eos_ids:
                break
            n += 1
        total += 1 + n
    return total


def branch_inputs(model, tokenizer, questions: list[str], k: int, eos_ids: set[int]):
    """Per question: prompt ids and its top-k first tokens (one forward each), special tokens left out as the
    engine does."""
    import torch

    from engine.prompts import sampling_prompt
    from engine.sampling.ops import branch_tokens
    from engine.sampling.paths import branch_excluded_ids

    excluded = torch.tensor(branch_excluded_ids(tokenizer, eos_ids), dtype=torch.long)
    out = []
    for q in questions:
        ids = tokenizer(sampling_prompt(q)).input_ids
        logits = model(torch.tensor([ids])).logits[0, -1].float()
        out.append((ids, branch_tokens(logits, k, excluded)[1].tolist()))
    return out


def gen_kwargs(model, tokenizer, tokens: int) -> dict:
    return {
        "do_sample": True,
        "top_k": 10,
        "top_p": 0.95,
        "temperature": 1.0,
        "max_new_tokens": tokens - 1,
        "num_return_sequences": 5,
        "pad_token_id": tokenizer.pad_token_id,
    }


def run_naive(model, tokenizer, questions, tokens, seed, eos_ids):
    import torch

    torch.manual_seed(seed)
    total = 0
    for ids, firsts in branch_inputs(model, tokenizer, questions, 5, eos_ids):
        for first in firsts:
            inp = torch.tensor([ids + [first]])
            out = model.generate(
                input_ids=inp, attention_mask=torch.ones_like(inp), **gen_kwargs(model, tokenizer, tokens)
            )
            total += count_generated(out[:, inp.shape[1] :], eos_ids)
    return total


def run_strong(model, tokenizer, questions, tokens, seed, eos_ids):
    import torch

    torch.manual_seed(seed)
    rows = [ids + [first] for ids, firsts in branch_inputs(model, tokenizer, questions, 5, eos_ids) for first in firsts]
    width = max(len(r) for r in rows)
    inp = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(inp)
    for i, r in enumerate(rows):  # left padding
        inp[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    out = model.generate(input_ids=inp, attention_mask=mask, **gen_kwargs(model, tokenizer, tokens))
    return count_generated(out[:, width:], eos_ids)


def run_engine(model, tokenizer, questions, tokens, seed, eos_ids, threads=None, info=None):
    from engine.config import SamplingConfig
    from engine.sampling.backends import make_sampler_from_model

    cfg = SamplingConfig(max_new_tokens=tokens, seed=seed)
    sampler = make_sampler_from_model(model, tokenizer, cfg, threads=threads)
    total = 0

    def on_done(_key, paths):
        nonlocal total
        total += sum(p.tokens for p in paths)

    logs: list[str] = []
    sampler.log = logs.append
    sampler.sample(list(enumerate(questions)), on_done)
    if info is not None:
        info["engine_threads"] = sampler.stats.get("threads")
        info["engine_batch"] = next((line for line in logs if "batch_size unset" in line), None)
    return total


MATMUL_OPS = {"aten::mm", "aten::addmm", "mkl::_mkl_linear", "aten::_mkl_linear"}
ATTENTION_OPS = {"aten::bmm", "aten::_softmax", "aten::index_copy_", "aten::masked_fill_"}


def profile_engine(model, tokenizer, questions, tokens, seed, threads=None) -> dict:
    """Where the engine's time goes, from a profiled run of ``questions`` (separate from the timed run): the
    self time of every op, classed as the LM's matmuls (the linear layers and the LM head), attention (the
    products with the cache, its softmax and the writes of new keys/values), the sampling ops (top-k/top-p over
    the vocabulary for every row: ops inside the ``sert.sampling_ops`` region), the prompts' prefill (inside
    ``sert.prefill``), other kernels (norms, activations, rotary, copies), and host-side bookkeeping: the wall
    time not spent in any op (Python, the batch's row moves, the tokenizer)."""
    from torch.profiler import ProfilerActivity, profile

    from engine.config import SamplingConfig
    from engine.sampling.backends import make_sampler_from_model
    from engine.sampling.hf import PREFILL, SAMPLING_OPS

    cfg = SamplingConfig(max_new_tokens=tokens, seed=seed)
    sampler = make_sampler_from_model(model, tokenizer, cfg, threads=threads)
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sampler.sample(list(enumerate(questions)), lambda _k, _p: None)
    wall = time.perf_counter() - started
    seconds = {"matmuls": 0.0, "attention": 0.0, "sampling_ops": 0.0, "prefill": 0.0, "other_kernels": 0.0}
    for ev in prof.events():
        if ev.name.startswith("sert.") or ev.name.startswith("ProfilerStep"):
            continue
        region, parent = None, ev.cpu_parent
        while parent is not None:
            if parent.name in (SAMPLING_OPS, PREFILL):
                region = parent.name
                break
            parent = parent.cpu_parent
        self_s = ev.self_cpu_time_total / 1e6
        if region == SAMPLING_OPS:
            seconds["sampling_ops"] += self_s
        elif region == PREFILL:
            seconds["prefill"] += self_s
        elif ev.name in MATMUL_OPS:
            seconds["matmuls"] += self_s
        elif ev.name in ATTENTION_OPS:
            seconds["attention"] += self_s
        else:
            seconds["other_kernels"] += self_s
    seconds["host"] = max(0.0, wall - sum(seconds.values()))
    return {
        "questions": len(questions),
        "wall_seconds": wall,
        "seconds": seconds,
        "shares": {k: v / wall for k, v in seconds.items()},
    }


def vllm_worker(questions: int, tokens: int, seed: int, dtype: str, model_spec: str = "default") -> dict:
    """The product's vLLM sampler on this CPU (run in .venv-vllm's interpreter): the same questions, seed and
    sampling parameters as the others; tokens per path counted as theirs (branch token + sampled tokens before
    the first EOS: ``SampledPath.tokens``)."""
    import torch

    from engine.config import SamplingConfig
    from engine.models import prepare_model
    from engine.sampling.vllm_backend import VLLMSampler

    cfg = SamplingConfig(max_new_tokens=tokens, seed=seed, dtype=dtype, backend="vllm")
    loaded = time.perf_counter()
    sampler = VLLMSampler(str(prepare_model(model_spec)), cfg)
    load_seconds = time.perf_counter() - loaded
    items = list(enumerate(load_questions(questions)))
    paths: dict[int, list] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    sampler.sample(items, lambda key, found: paths.__setitem__(key, found))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    sampler.close()
    total = sum(p.tokens for found in paths.values() for p in found)
    import vllm

    return {
        "method": "vllm",
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "tokens": total,
        "paths": sum(len(found) for found in paths.values()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # of this process only: vLLM's engine core runs in a child process
        "tok_s": total / seconds,
        "peak_mem_gb": peak_rss_gb(),
        "load_seconds": load_seconds,
        "vllm_version": vllm.__version__,
    }


def worker(method: str, questions: int, tokens: int, seed: int, threads: int, model_spec: str = "default") -> dict:
    """Run one method in this process and return its figures."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from engine.models import eos_token_ids, load_model
    from engine.precision import cpu_bf16_fast
    from engine.sampling.ops import choose_dtype

    if method == "naive":
        dtype = torch.float32
    elif method == "strong":
        dtype = torch.bfloat16 if cpu_bf16_fast() else torch.float32
    else:
        dtype = choose_dtype("auto", "cpu")
        from engine.precision import describe

        info_reason = describe("cpu", str(dtype).removeprefix("torch."))
    model, tokenizer = load_model(model_spec, device="cpu", dtype=str(dtype).removeprefix("torch."))
    qs = load_questions(questions)
    eos_ids = set(eos_token_ids(model, tokenizer))
    info: dict = {"dtype_reason": info_reason} if method == "engine" else {}
    with torch.inference_mode():
        started, cpu_started = time.perf_counter(), time.process_time()
        if method == "engine":
            total = run_engine(model, tokenizer, qs, tokens, seed, eos_ids, threads or None, info)
        else:
            total = {"naive": run_naive, "strong": run_strong}[method](model, tokenizer, qs, tokens, seed, eos_ids)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        peak = peak_rss_gb()  # of the timed run, before the profiled one (the profiler keeps its events)
        if method == "engine":
            info["breakdown"] = profile_engine(model, tokenizer, qs[: min(len(qs), 8)], tokens, seed, threads or None)
    return {
        "method": method,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": threads or torch.get_num_threads(),
        "tokens": total,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tok_s": total / seconds,
        "peak_mem_gb": peak,
        **info,
    }


def matmul_rates(size: int = 1024, reps: int = 5) -> dict[str, float]:
    """Best-of-``reps`` GFLOP/s of a square matmul in fp32 and bf16."""
    import torch

    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        rates[name] = 2 * size**3 / best / 1e9
    return rates


def linear_params(model_spec: str = "default") -> int:
    import torch

    from engine.models import load_model

    model, _ = load_model(model_spec, device="cpu")
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def engine_dtype() -> str:
    """The dtype the engine computes in here (``dtype = "auto"``): the vLLM run uses the same."""
    from engine.sampling.ops import choose_dtype

    return str(choose_dtype("auto", "cpu")).removeprefix("torch.")


def spawn(method: str, args: argparse.Namespace) -> dict:
    python = sys.executable
    if method == "vllm":
        python = str(Path(args.vllm_python))
        if not Path(python).is_file():
            raise SystemExit(f"error: --methods vllm: {python} not found; build it with `make vllm-cpu`")
    cmd = [python, __file__, "--worker", method, "--questions", str(args.questions)]
    cmd += ["--tokens", str(args.tokens), "--seed", str(args.seed), "--threads", str(args.threads)]
    cmd += ["--model", args.model]
    if method == "vllm":
        cmd += ["--vllm-dtype", engine_dtype()]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{method} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8, help="StrategyQA train questions (default 8)")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per path, branch token included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="pin every method to N CPU threads (default 0: PyTorch's default for the baselines, the engine "
        "picks its own by measuring each step)",
    )
    parser.add_argument(
        "--model",
        default="default",
        help='the student: "default" (the bundled SmolLM2-135M-Instruct), a hub id or a local folder',
    )
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=1024,
        help="side of the square matmul that measures the roofline's rates (default 1024)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--methods", default="naive,strong,engine", help="comma-separated subset of naive,strong,engine,vllm"
    )
    parser.add_argument(
        "--vllm-python",
        default=str(VLLM_PYTHON),
        help="the interpreter of the vLLM venv (default: .venv-vllm/bin/python, made by `make vllm-cpu`)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--vllm-dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens < 2:
        parser.error("--tokens must be at least 2")

    if args.worker == "vllm":
        print(json.dumps(vllm_worker(args.questions, args.tokens, args.seed, args.vllm_dtype, args.model)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.questions, args.tokens, args.seed, args.threads, args.model)))
        return
    unknown = set(args.methods.split(",")) - {"naive", "strong", "engine", "vllm"}
    if unknown:
        parser.error(f"--methods: unknown {', '.join(sorted(unknown))} (naive, strong, engine, vllm)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    rates = None
    for method in args.methods.split(","):
        if method == "engine":  # the machine's matmul ceiling, measured just before the engine runs
            rates = matmul_rates(args.matmul_size)
        if not args.json:
            print(f"running {method} ...", file=sys.stderr, flush=True)
        results[method] = spawn(method, args)
    rates = rates or matmul_rates(args.matmul_size)
    params = linear_params(args.model)
    flops_per_token = 2 * params
    # the roofline is the matmul rate of the dtype the engine computes in (dtype auto: engine.precision)
    best_dtype = results["engine"]["dtype"] if "engine" in results else max(rates, key=rates.get)
    roofline_tok_s = rates[best_dtype] * 1e9 / flops_per_token

    def tok_s(m: str) -> float | None:
        return results[m]["tok_s"] if m in results else None

    def ratio(a: str, b: str) -> float | None:
        return tok_s(a) / tok_s(b) if a in results and b in results else None

    def cpu_ratio(a: str, b: str) -> float | None:
        """The same ratio in tokens per CPU-second: steadier than wall time on a shared machine."""
        if a not in results or b not in results:
            return None
        per_cpu = {m: results[m]["tokens"] / results[m]["cpu_seconds"] for m in (a, b)}
        return per_cpu[a] / per_cpu[b]

    summary = {
        "questions": args.questions,
        "paths_per_question": 25,
        "tokens": args.tokens,
        "seed": args.seed,
        "model": args.model,
        "threads": args.threads or f"default ({torch.get_num_threads()}); engine adaptive",
        "naive_tok_s": tok_s("naive"),
        "strong_tok_s": tok_s("strong"),
        "engine_tok_s": tok_s("engine"),
        "vllm_tok_s": tok_s("vllm"),
        "ratio_naive": ratio("engine", "naive"),
        "ratio_strong": ratio("engine", "strong"),
        "ratio_vllm": ratio("engine", "vllm"),
        "roofline_share": tok_s("engine") / roofline_tok_s if "engine" in results else None,
        "ratio_naive_cpu": cpu_ratio("engine", "naive"),
        "ratio_strong_cpu": cpu_ratio("engine", "strong"),
        "peak_mem_gb": results["engine"]["peak_mem_gb"] if "engine" in results else None,
        "roofline_tok_s": roofline_tok_s,
        "matmul_gflops": rates,
        "roofline_dtype": best_dtype,
        "engine_dtype_reason": results["engine"].get("dtype_reason") if "engine" in results else None,
        "engine_batch": results["engine"].get("engine_batch") if "engine" in results else None,
        "breakdown": results["engine"].get("breakdown") if "engine" in results else None,
        "linear_params": params,
        "runs": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"sampling benchmark: {args.questions} StrategyQA questions x 25 paths, <= {args.tokens} new tokens, "
        f"seed {args.seed}, model {args.model}, cpu, threads: {summary['threads']}"
    )
    labels = {
        "naive": "naive  (generate per branch)",
        "strong": "strong (one generate batch)",
        "engine": "engine (engine.sampling)",
        "vllm": "vllm   (vLLM on this CPU)",
    }
    for m, r in results.items():
        extra = f", threads chosen {r['engine_threads']}" if r.get("engine_threads") else ""
        print(
            f"  {labels[m]:<30} {r['dtype']:<8} {r['tok_s']:8.1f} tok/s  ({r['tokens']} tokens in "
            f"{r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, peak RSS {r['peak_mem_gb']:.2f} GB{extra})"
        )
    for name, target in (("naive", 8), ("strong", 5), ("vllm", 4)):
        if summary[f"ratio_{name}"] is not None:
            print(
                f"  engine / {name:<6}: {summary[f'ratio_{name}']:.2f}x wall, "
                + (
                    f"{summary[f'ratio_{name}_cpu']:.2f}x per CPU-second"
                    if name != "vllm"
                    else "(vLLM works in a child)"
                )
                + f"   (target >= {target}x)"
            )
    print(
        f"  matmul: fp32 {rates['float32']:.0f} GFLOP/s, bf16 {rates['bfloat16']:.0f} GFLOP/s; roofline "
        f"{roofline_tok_s:.0f} tok/s ({best_dtype}, {flops_per_token / 1e6:.0f} MFLOP/token)"
    )
    if summary["roofline_share"] is not None:
        print(f"  engine dtype: {summary['engine_dtype_reason']}")
        print(f"  engine batch: {summary['engine_batch']}")
        print(f"  engine share of the {best_dtype} roofline: {100 * summary['roofline_share']:.1f}%")
        b = summary["breakdown"]
        parts = ", ".join(f"{k} {100 * v:.0f}%" for k, v in b["shares"].items())
        print(
            f"  where the engine's time goes ({b['questions']} questions profiled, {b['wall_seconds']:.1f} s): {parts}"
        )
        print(f"  engine peak memory: {summary['peak_mem_gb']:.2f} GB (target < 4 GB)")


if __name__ == "__main__":
    main()
