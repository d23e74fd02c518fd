"""GPU-only paths, gated: memory reporting and ``torch.compile``.

The compile decision is a pure function of the setting and the hardware (passed in), so it is unit-tested on
a CPU-only machine; the functions that touch CUDA (:func:`memory_metrics`, :func:`maybe_compile`) do nothing
off CUDA.

The precision choices are made in :mod:`engine.precision` (measured on a CPU) and tested in
tests/test_scale_gpu_gates.py: training autocasts to bf16 where bf16 is fast (CUDA with bf16: Ampere and newer;
CPUs where a bf16 GEMM measurably beats fp32), else fp32 without autocast, never fp16 (it would need loss
scaling); sampling and evaluation compute in bf16 where fast, fp16 on CUDA GPUs without bf16 (V100, T4), fp32
elsewhere.

- ``torch.compile`` pays only on CUDA (Inductor/Triton kernels) and only for runs long enough to amortise
  the compilation (about a minute): ``train.compile = "auto"`` compiles the decoder on CUDA from
  :data:`COMPILE_MIN_STEPS` optimizer steps; ``"on"`` forces it on CUDA; never on CPU/MPS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from db.vocabulary import METRIC_MEMORY_MB, METRIC_MEMORY_RESERVED_MB

#: Optimizer steps from which compiling the decoder pays for its compilation time.
COMPILE_MIN_STEPS = 200


def should_compile(setting: str, device: str, total_steps: int, *, compiler_available: bool = True) -> bool:
    """Whether to ``torch.compile`` the decoder for training (CUDA only, and only where it pays)."""
    if setting == "off" or not device.startswith("cuda") or not compiler_available:
        return False
    return setting == "on" or total_steps >= COMPILE_MIN_STEPS


def reset_memory_peak(device: str) -> None:
    """Start the peak counters of :func:`memory_metrics` afresh (a job's peak, not that of the sampling or
    training that ran before it in the same process, as ``--stage all`` does)."""
    if not device.startswith("cuda"):
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def memory_metrics(device: str) -> dict[str, float]:
    """Peak (since :func:`reset_memory_peak`) and reserved CUDA memory in MiB, for the job's metrics (empty off
    CUDA)."""
    if not device.startswith("cuda"):
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        METRIC_MEMORY_MB: torch.cuda.max_memory_allocated() / 2**20,
        METRIC_MEMORY_RESERVED_MB: torch.cuda.max_memory_reserved() / 2**20,
    }


def triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def maybe_compile(model: Any, setting: str, device: str, total_steps: int, log: Callable[[str], None]) -> bool:
    """Compile ``model``'s decoder in place (dynamic shapes: batches vary in length) when it pays."""
    if not should_compile(setting, device, total_steps, compiler_available=triton_available()):
        return False
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    decoder.compile(dynamic=True)
    log(f"torch.compile: decoder compiled for {total_steps} steps on {device}")
    return True
