"""The vLLM backend for GPU servers (``sampling.backend = "vllm"``, or ``auto`` on CUDA with vLLM installed).

Same method as the transformers backend, on vLLM's engine: ``LLM(model, tensor_parallel_size,
enable_prefix_caching=True)``. Per chunk of questions, one 1-token request per prompt with ``logprobs=first_tokens``
(plus room for the special tokens that never start a branch) gives the branch tokens (ranked by probability); then
every branch is one request ``prompt + branch token`` with ``SamplingParams(n=per_branch, top_k, top_p, temperature,
max_tokens=max_new_tokens - 1, logprobs=0, seed)``. Prefix caching shares the prompt's KV blocks between the
branches and samples; vLLM returns each sampled token's log-probability from the same forward pass (its default
``raw_logprobs`` mode: the model's distribution before temperature/top-k/top-p, as in the HF backend).
``logprobs=2`` adds the two most probable tokens of every position, ranked, so each token's margin
p(top-1) - p(top-2) of that raw distribution (path confidence, :func:`engine.sampling.paths.path_confidence`) comes
from the same pass, as in the HF backend; the branch token's comes from the branch request's ranked table. Where
vLLM gives no ranks (rank 1 and rank 2 not both in a position's table) the path's margins, and so its confidence,
are None.

vLLM is imported only inside :class:`VLLMSampler`; the request construction and the conversion of results into
:class:`SampledPath` work on plain objects and are unit-tested without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.sampling.ops import question_seed

if TYPE_CHECKING:
    from engine.config import SamplingConfig
    from engine.sampling.paths import SampledPath


#: Special tokens the branch request looks past: the top ``first_tokens + this`` first tokens always hold
#: ``first_tokens`` ordinary ones when at most this many excluded ids rank above them.
MAX_EXCLUDED_LOOKAHEAD = 16
VLLM_BATCH = 1024  # sequences per vLLM generate call when sampling.batch_size is unset (vLLM schedules inside it)
#: vLLM's KV cache on a CPU, in GiB, where neither VLLM_CPU_KVCACHE_SPACE nor sampling.max_batch_memory_mb says:
#: left to itself vLLM sizes it from gpu_memory_utilization (0.9) of the machine's memory, and on a machine whose
#: memory other processes use its worker failed to start ("Engine core initialization failed", no root cause).
CPU_KV_CACHE_GIB = 4


def cpu_kv_cache_gib(cfg: SamplingConfig) -> int:
    """The KV cache vLLM gets on a CPU: ``sampling.max_batch_memory_mb`` rounded up to GiB, else 4 GiB."""
    if cfg.max_batch_memory_mb:
        return max(1, -(-int(cfg.max_batch_memory_mb) // 1024))
    return CPU_KV_CACHE_GIB


def llm_kwargs(model_path: str, cfg: SamplingConfig) -> dict[str, Any]:
    """Arguments of ``vllm.LLM``: tensor parallelism over ``sampling.tensor_parallel_size`` GPUs (vLLM starts
    its own workers), prefix caching for the shared prompts, the sampling dtype (``auto``: vLLM's choice), and
    room for the branch request's log-probs (vLLM refuses more than ``max_logprobs``, 20 by default)."""
    return {
        "model": model_path,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enable_prefix_caching": True,
        "seed": cfg.seed,
        "dtype": cfg.dtype if cfg.dtype in ("float32", "bfloat16", "float16") else "auto",
        "max_logprobs": max(20, cfg.first_tokens + MAX_EXCLUDED_LOOKAHEAD),
    }


def first_token_kwargs(cfg: SamplingConfig, excluded: int = 0) -> dict[str, Any]:
    """SamplingParams of the branch request: one greedy token, with enough top log-probs to leave
    ``first_tokens`` after dropping up to ``excluded`` special tokens."""
    lookahead = min(excluded, MAX_EXCLUDED_LOOKAHEAD)
    return {"n": 1, "max_tokens": 1, "temperature": 0.0, "logprobs": cfg.first_tokens + lookahead}


def continuation_kwargs(cfg: SamplingConfig, seed: int) -> dict[str, Any]:
    """SamplingParams of one branch's continuations (``max_new_tokens`` counts the branch token)."""
    return {
        "n": cfg.per_branch,
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_new_tokens - 1,
        "logprobs": 2,  # the top two of each position besides the sampled token: the margins of path confidence
        "seed": seed,
    }


def branch_seed(seed: int, key: int, branch: int) -> int:
    """Per-request seed: reproducible, independent of what else is in the batch."""
    return question_seed(seed, key * 1009 + branch) & 0x7FFFFFFF


def branches_from_first_output(
    output: Any, first_tokens: int, excluded: Collection[int] = ()
) -> list[tuple[int, float]]:
    """``(token_id, logprob)`` of the top ``first_tokens`` first tokens outside ``excluded``, most probable first.

    ``output`` is a vLLM ``RequestOutput`` (or any object shaped like it): ``output.outputs[0].logprobs[0]`` maps
    token ids to objects with ``logprob`` and ``rank``.
    """
    table = output.outputs[0].logprobs[0]
    ranked = sorted(table.items(), key=lambda item: (_rank(item[1]), -item[1].logprob))
    kept = [(int(tok), float(lp.logprob)) for tok, lp in ranked if int(tok) not in excluded]
    return kept[:first_tokens]


def ranked_margin(table: Any) -> float | None:
    """``p(top-1) - p(top-2)`` from one position's vLLM log-prob table (token id -> object with ``logprob`` and
    ``rank``); None unless ranks 1 and 2 are both there."""
    import math

    by_rank = {getattr(lp, "rank", None): float(lp.logprob) for lp in table.values()}
    if 1 not in by_rank or 2 not in by_rank:
        return None
    return math.exp(by_rank[1]) - math.exp(by_rank[2])


def _rank(logprob: Any) -> int:
    rank = getattr(logprob, "rank", None)
    return rank if rank is not None else 1 << 30


def paths_from_branch_outputs(
    branches: Sequence[tuple[int, float]],
    outputs: Sequence[Any],
    eos_ids: set[int],
    decode: Callable[[list[int]], str],
    first_margin: float | None = None,
) -> list[SampledPath]:
    """Turn one question's branch requests (``outputs[b]`` answers branch ``b``; ``None`` where no continuation
    was requested) into its ``len(branches) * n`` paths, branch-major. ``first_margin``: the margin of the branch
    position (:func:`ranked_margin` of the branch request); with it and ranked continuation tables the paths carry
    their margins."""
    from engine.sampling.hf import _perplexity
    from engine.sampling.paths import SampledPath

    paths = []
    for b, ((branch_tok, branch_lp), output) in enumerate(zip(branches, outputs, strict=True)):
        completions = output.outputs if output is not None else [None]
        for s, completion in enumerate(completions):
            ids = [branch_tok]
            lps = [branch_lp]
            margins: list[float | None] = [first_margin]
            if completion is not None:
                cont = list(completion.token_ids)
                cont_lps = completion.logprobs or []
                if cont and cont[-1] in eos_ids and getattr(completion, "finish_reason", "stop") == "stop":
                    cont = cont[:-1]
                ids += cont
                lps += [float(cont_lps[i][tok].logprob) for i, tok in enumerate(cont)]
                margins += [ranked_margin(cont_lps[i]) for i in range(len(cont))]
            mean_lp = sum(lps) / len(lps)
            paths.append(
                SampledPath(
                    branch=b,
                    sample=s,
                    branch_token=decode([branch_tok]),
                    text=decode(ids),
                    token_ids=ids,
                    tokens=len(ids),
                    mean_logprob=mean_lp,
                    perplexity=_perplexity(mean_lp),
                    margins=None if None in margins else [float(m) for m in margins if m is not None],
                )
            )
    return paths


def _eos_ids(model_path: str, tokenizer: Any) -> set[int]:
    """The ids vLLM stops at: :func:`engine.models.eos_token_ids` with the generation config of the folder."""
    from types import SimpleNamespace

    from engine.models import eos_token_ids

    try:
        from transformers import GenerationConfig

        generation_config = GenerationConfig.from_pretrained(model_path)
    except Exception:
        generation_config = None
    return set(eos_token_ids(SimpleNamespace(generation_config=generation_config), tokenizer))


class VLLMSampler:
    """Samples latent reasoning paths with vLLM (on a GPU, or on a CPU from `make vllm-cpu`)."""

    def __init__(self, model_path: str, cfg: SamplingConfig, log: Callable[[str], None] | None = None) -> None:
        from vllm import LLM

        from engine.sampling.paths import branch_excluded_ids

        self.cfg = cfg
        self.log = log or (lambda _msg: None)
        import torch

        if not torch.cuda.is_available() and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(cfg))
            self.log(f"vLLM on the CPU: KV cache {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB (VLLM_CPU_KVCACHE_SPACE)")
        self.llm = LLM(**llm_kwargs(model_path, cfg))
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = _eos_ids(model_path, self.tokenizer)
        self.branch_excluded = set(branch_excluded_ids(self.tokenizer, self.eos_ids))

    def close(self) -> None:
        """End vLLM's engine-core and worker processes now. Run on a CPU, a `sert-tui run` process whose job had
        completed did not exit (it was still waiting 9 minutes later) while they were left to the interpreter's
        exit."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def sample(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from engine.prompts import sampling_prompt

        cfg = self.cfg
        excluded = self.branch_excluded
        rows_per_question = cfg.first_tokens * cfg.per_branch
        chunk = max(1, (cfg.batch_size or VLLM_BATCH) // rows_per_question)
        first_params = SamplingParams(**first_token_kwargs(cfg, len(excluded)))
        for start in range(0, len(items), chunk):
            if should_stop():
                self.log("sampling stopped before the end; unfinished questions are not reported")
                return
            part = items[start : start + chunk]
            prompts = [self.tokenizer(sampling_prompt(text)).input_ids for _key, text in part]
            firsts = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in prompts], first_params, use_tqdm=False
            )
            branches = [branches_from_first_output(out, cfg.first_tokens, excluded) for out in firsts]
            requests, params, owners = [], [], []
            if cfg.max_new_tokens > 1:
                for qi, ((key, _text), ids) in enumerate(zip(part, prompts, strict=True)):
                    for b, (tok, _lp) in enumerate(branches[qi]):
                        requests.append(TokensPrompt(prompt_token_ids=ids + [tok]))
                        params.append(SamplingParams(**continuation_kwargs(cfg, branch_seed(cfg.seed, key, b))))
                        owners.append((qi, b))
            outputs = self.llm.generate(requests, params, use_tqdm=False) if requests else []
            per_question: list[list[Any]] = [[None] * len(b) for b in branches]
            for (qi, b), out in zip(owners, outputs, strict=True):
                per_question[qi][b] = out
            for qi, (key, _text) in enumerate(part):
                margin = ranked_margin(firsts[qi].outputs[0].logprobs[0])
                paths = paths_from_branch_outputs(branches[qi], per_question[qi], self.eos_ids, self._decode, margin)
                if cfg.max_new_tokens <= 1:  # nothing to sample: every sample of a branch is its branch token
                    paths = [replace(p, sample=s) for p in paths for s in range(cfg.per_branch)]
                on_done(key, paths)
