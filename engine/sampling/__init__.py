"""SERT stage 1 sampling: the student's latent reasoning paths (DESIGN.md section 1).

For each question the prompt ``Question: {q}\\nAnswer:`` is encoded once; the student's top ``first_tokens`` next
tokens start one branch each (branch 0 = most probable; special tokens such as an instruct model's ``<|im_end|>``,
which is also its EOS, never start a branch: see :func:`branch_excluded_ids`), and every branch is continued
``per_branch`` times by sampling (top-k, then top-p inside the k, temperature) for at most ``max_new_tokens``
tokens, the branch token included. A path's ``mean_logprob`` is the mean over its tokens (branch token first, the
terminating EOS excluded) of ``log_softmax(raw logits)`` -- the student's plain next-token distribution at
temperature 1, whatever the sampling temperature -- taken from the very forward passes that sampled the path;
``perplexity = exp(-mean_logprob)``.

Backends: ``hf`` (transformers, CPU or one GPU; :mod:`engine.sampling.hf`) and ``vllm`` (GPU servers;
:mod:`engine.sampling.vllm_backend`), chosen by ``sampling.backend``; ``sampling.batch_invariant`` (a question's
paths exactly independent of the rest of the run, see :mod:`engine.sampling.hf`) is the hf backend's.
torch/transformers/vllm are imported lazily so importing this package is cheap.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import UserError

if TYPE_CHECKING:
    from engine.config import SamplingConfig, StudentConfig


@dataclass
class SampledPath:
    branch: int  # 0..first_tokens-1, in order of the first token's probability (0 = most probable)
    sample: int  # 0..per_branch-1
    branch_token: str  # decoded first token
    text: str  # everything the student produced after "Answer:", the branch token included
    token_ids: list[int]  # exactly those tokens (branch token first), EOS excluded
    tokens: int  # len(token_ids)
    mean_logprob: float  # mean log_softmax(raw logits) of those tokens given the prompt, same passes as sampling
    perplexity: float  # exp(-mean_logprob)


class Sampler(Protocol):
    tokenizer: Any

    def sample(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool] = ...,
    ) -> None:
        """``items``: (key, question text). Calls ``on_done(key, paths)`` as soon as all
        ``first_tokens * per_branch`` paths of that question are finished; checks ``should_stop`` between
        decode steps and returns early when it is true (unfinished questions are not reported)."""
        ...


def branch_excluded_ids(tokenizer: Any, eos_ids: Iterable[int] = ()) -> list[int]:
    """Token ids that never start a branch: the tokenizer's special tokens and the EOS ids.

    A chat model's end-of-turn token (SmolLM2-Instruct's ``<|im_end|>``, its EOS) is among the top five first
    tokens after ``Answer:`` for most StrategyQA questions; a "path" that starts by ending the text is no
    reasoning path, so the branches are the top ``first_tokens`` among the other tokens (their log-probs are
    still those of the full distribution)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    ids.update(int(i) for i in eos_ids)
    return sorted(i for i in ids if i >= 0)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> vLLM on CUDA when it is installed, else ``hf``; ``vllm`` without vLLM -> UserError."""
    if backend == "hf":
        return "hf"
    if backend == "vllm":
        if not vllm_available():
            raise UserError(
                "sampling.backend = 'vllm' but vllm is not installed: install it on a GPU machine "
                "(pip install 'sert-tui[vllm]') or set sampling.backend = 'hf'"
            )
        return "vllm"
    if backend == "auto":
        return "vllm" if device.startswith("cuda") and vllm_available() else "hf"
    raise UserError(f"sampling.backend: unknown backend {backend!r} (auto, hf, vllm)")


def make_sampler(
    student_cfg: StudentConfig,
    sampling_cfg: SamplingConfig,
    log: Callable[[str], None] = lambda _msg: None,
) -> Sampler:
    """Load the student for sampling and return the backend's sampler."""
    from engine.models import prepare_model, resolve_device
    from engine.sampling.ops import choose_dtype

    device = resolve_device(student_cfg.device)
    invariant = sampling_cfg.batch_invariant
    if invariant and sampling_cfg.backend == "vllm":
        raise UserError(
            "sampling.batch_invariant is a mode of the transformers backend: set sampling.backend = 'hf' (or 'auto'), "
            "or sampling.batch_invariant = false for vLLM"
        )
    backend = "hf" if invariant else resolve_backend(sampling_cfg.backend, device)
    if backend == "vllm":
        from engine.sampling.vllm_backend import VLLMSampler

        path = prepare_model(student_cfg.model, log)
        log(f"sampling backend: vllm ({path}, tensor_parallel_size={sampling_cfg.tensor_parallel_size})")
        return VLLMSampler(str(path), sampling_cfg, log=log)

    from engine.models import load_model

    if sampling_cfg.tensor_parallel_size > 1:
        log("sampling.tensor_parallel_size applies to the vLLM backend only; the hf backend uses one device")
    if invariant and sampling_cfg.dtype == "auto":
        dtype = choose_dtype("float32", device)  # batch-invariant: float32 unless sampling.dtype names one
    else:
        dtype = choose_dtype(sampling_cfg.dtype, device, student_cfg.dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    model, tokenizer = load_model(student_cfg.model, device=device, dtype=dtype_name, progress=log)
    log(f"sampling backend: hf on {device} in {dtype_name}{', batch-invariant' if invariant else ''}")
    return make_sampler_from_model(model, tokenizer, sampling_cfg, log=log)


def make_sampler_from_model(
    model: Any,
    tokenizer: Any,
    sampling_cfg: SamplingConfig,
    log: Callable[[str], None] = lambda _msg: None,
    fused: bool | None = None,
    threads: int | None = None,
) -> Sampler:
    """The transformers sampler on an already loaded model (tests, benchmarks, the app). ``fused``: force the
    fused Llama-family decode step on/off (default: on where the architecture allows it); ``threads``: a fixed
    CPU thread count (default: measured per step, see :mod:`engine.sampling.threads`)."""
    from engine.sampling.hf import HFSampler

    return HFSampler(model, tokenizer, sampling_cfg, log=log, fused=fused, threads=threads)


__all__ = [
    "SampledPath",
    "Sampler",
    "branch_excluded_ids",
    "make_sampler",
    "make_sampler_from_model",
    "resolve_backend",
    "vllm_available",
]
