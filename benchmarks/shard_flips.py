"""How often sharding changes a sampled path: N questions sampled as one run and as 2 shards, compared.

The first N StrategyQA training questions of ../shared/data (the split file's order) are sampled twice with
the same settings and seed, in one process on the same model: once all together (the unsharded run), once as
the two shards ``--shard 0/2`` and ``--shard 1/2`` would take them (every other question, each shard its own
sampler). What holds by construction is compared first -- the same (question, branch, sample) keys, the same
number of paths per question, the same branch tokens; then the texts: the share of paths whose text differs,
the questions with at least one such path, and how many tokens into the path the first difference comes.

In the default mode a question is decoded in batches of other composition in the two runs (other neighbours,
another number of rows, possibly another thread count or weight packing), which can round a bf16/fp32 logit
differently and flip one sampled token; from there the path diverges. With ``sampling.batch_invariant`` the
texts must be identical (``--modes default,batch_invariant`` measures both and the throughput of each).

    python benchmarks/shard_flips.py [--questions 16] [--tokens 128] [--batch-size 256] [--dtype auto]
                                     [--modes default] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def load_items(n: int) -> list[tuple[int, str]]:
    rows = json.loads((DATA / "dataset" / "strategy_qa.json").read_text())
    split = json.loads((DATA / "split" / "strategy_qa__default.json").read_text())
    return [(i, rows[i]["question"]) for i in split["train"][:n]]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sample(model, tokenizer, cfg, items) -> tuple[dict[tuple, tuple], dict]:
    """(key, branch, sample) -> (branch token, token ids, text) of one sampler run over ``items``."""
    from engine.sampling.backends import make_sampler_from_model

    sampler = make_sampler_from_model(model, tokenizer, cfg)
    got: dict[tuple, tuple] = {}

    def on_done(key: int, paths: list) -> None:
        for p in paths:
            got[(key, p.branch, p.sample)] = (p.branch_token, tuple(p.token_ids), p.text)

    started = time.perf_counter()
    sampler.sample(list(items), on_done)
    seconds = time.perf_counter() - started
    tokens = sum(len(v[1]) for v in got.values())
    return got, {"seconds": seconds, "tokens": tokens, "threads": sampler.stats.get("threads")}


def first_difference(a: tuple, b: tuple) -> int:
    """The 0-based index of the first token where two paths differ (the branch token is index 0)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(whole: dict, sharded: dict, per_question: int) -> dict:
    keys_equal = set(whole) == set(sharded)
    questions = sorted({k[0] for k in whole})
    counts_equal = all(
        sum(k[0] == q for k in whole) == sum(k[0] == q for k in sharded) == per_question for q in questions
    )
    common = sorted(set(whole) & set(sharded))
    branch_tokens_equal = all(whole[k][0] == sharded[k][0] for k in common)
    differing = [k for k in common if whole[k][2] != sharded[k][2]]
    firsts = [first_difference(whole[k][1], sharded[k][1]) for k in differing]
    return {
        "keys_equal": keys_equal,
        "counts_equal": counts_equal,
        "branch_tokens_equal": branch_tokens_equal,
        "paths": len(common),
        "differing_paths": len(differing),
        "differing_share": len(differing) / max(len(common), 1),
        "questions": len(questions),
        "questions_with_a_flip": len({k[0] for k in differing}),
        "first_difference_token": {
            "min": min(firsts) if firsts else None,
            "median": statistics.median(firsts) if firsts else None,
            "max": max(firsts) if firsts else None,
        },
        "mean_path_tokens": statistics.mean(len(v[1]) for v in whole.values()) if whole else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128, help="sampling.max_new_tokens")
    parser.add_argument("--batch-size", type=int, default=256, help="sampling.batch_size (sequences per batch)")
    parser.add_argument("--dtype", default="auto", help="sampling.dtype: auto | float32 | bfloat16")
    parser.add_argument("--modes", default="default", help="comma-separated: default, batch_invariant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()

    import torch

    from engine.config import SamplingConfig
    from engine.models import load_model
    from engine.precision import cpu_bf16_fast
    from engine.sampling.ops import choose_dtype

    items = load_items(args.questions)
    shards = [items[0::2], items[1::2]]  # what data.shard = "0/2" and "1/2" take
    result: dict = {
        "cpu": cpu_name(),
        "fast_bf16": cpu_bf16_fast(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "questions": len(items),
        "settings": {"max_new_tokens": args.tokens, "batch_size": args.batch_size, "seed": args.seed, "paths": 25},
        "modes": {},
    }
    models: dict = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        invariant = mode == "batch_invariant"
        requested = "float32" if invariant and args.dtype == "auto" else args.dtype
        dtype = str(choose_dtype(requested, "cpu")).removeprefix("torch.")
        if dtype not in models:
            models[dtype] = load_model("default", device="cpu", dtype=dtype)
        model, tokenizer = models[dtype]
        cfg = SamplingConfig(
            backend="hf",
            max_new_tokens=args.tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            batch_invariant=invariant,
        )
        with torch.inference_mode():
            sample(model, tokenizer, cfg.model_copy(update={"max_new_tokens": 4}), items[:1])  # warm-up
            whole, run_whole = sample(model, tokenizer, cfg, items)
            sharded: dict = {}
            runs_shard = []
            for shard in shards:
                got, run = sample(model, tokenizer, cfg, shard)
                sharded.update(got)
                runs_shard.append(run)
        seconds = run_whole["seconds"]
        result["modes"][mode] = {
            "dtype": dtype,
            **compare(whole, sharded, cfg.first_tokens * cfg.per_branch),
            "unsharded_tok_s": run_whole["tokens"] / seconds if seconds else None,
            "unsharded_seconds": seconds,
            "shard_seconds": [r["seconds"] for r in runs_shard],
            "sampler_threads": run_whole["threads"],
        }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
