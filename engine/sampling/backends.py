"""Choosing and building a sampler: the transformers backend or vLLM (imported only when used)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from db.errors import UserError

if TYPE_CHECKING:
    from engine.config import SamplingConfig, StudentConfig
    from engine.sampling.paths import Sampler


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
