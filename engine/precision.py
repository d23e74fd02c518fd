"""What ``dtype = "auto"`` means, measured: whether bf16 matrix products beat fp32 on this machine.

CPUs differ: with AMX (or AVX512-BF16) a bf16 GEMM runs about 4x faster than fp32; without them PyTorch emulates
bf16 and it is several times *slower* (measured 40 vs 140 GFLOP/s on an AVX512 Xeon without BF16). CPU flags say
what the hardware has, not what this torch build does with it, so on a CPU ``auto`` times both: a GEMM of the
shape a decode step or a training micro-batch runs (rows x 576 @ 576 x 1536, the bundled student's MLP), best of
a few repeats, once per process (about 0.2 s per dtype; a single product where one takes longer, as emulated bf16
does: 0.6 s on an AVX2 EPYC, where five full repeats took 8 s). On CUDA, bf16 where the GPU supports it (Ampere
and newer), else fp16 for inference and fp32 for training (fp16 training would need loss scaling); MPS and others: fp32.

Every stage asks here -- sampling (:func:`engine.sampling.ops.choose_dtype`), training
(:func:`engine.training.trainer.use_bf16`) and evaluation -- and logs :func:`describe`, so a benchmark and a job
log both say what was chosen and why.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

#: bf16 counts as fast when its GEMM rate is at least this multiple of fp32's (a margin over timing noise).
FAST_MARGIN = 1.2
_SHAPE = (256, 576, 1536)  # rows x inner x out: a decode batch through the bundled student's MLP


@dataclass(frozen=True)
class Rates:
    """Measured GEMM rates (GFLOP/s) on the CPU."""

    float32: float
    bfloat16: float

    @property
    def bf16_fast(self) -> bool:
        return self.bfloat16 >= FAST_MARGIN * self.float32

    def best(self, dtype_name: str) -> float:
        return {"float32": self.float32, "bfloat16": self.bfloat16}[dtype_name]


def gemm_rate(dtype_name: str, shape: tuple[int, int, int] = _SHAPE, reps: int = 5, budget_s: float = 0.2) -> float:
    """Best-of-``reps`` GFLOP/s of one ``[m, k] @ [k, n]`` product in ``dtype_name`` on the CPU, in about
    ``budget_s`` seconds. Where one product alone takes longer than the budget (bf16 emulated: under 1 GFLOP/s
    on an AVX2 CPU, 0.6 s a product), that first product is the measurement: more repeats would cost seconds in
    every process and could not turn an emulated dtype into a fast one."""
    import torch

    dtype = getattr(torch, dtype_name)
    m, k, n = shape
    flops = 2 * m * k * n
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)
    started = time.perf_counter()
    a @ b  # first call: kernel selection, packing buffers
    first = time.perf_counter() - started
    if first >= budget_s:
        return flops / first / 1e9
    inner = max(1, int(budget_s / reps / max(first, 1e-6)))  # repeats long enough to time, budget_s in all
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(inner):
            a @ b
        best = min(best, (time.perf_counter() - started) / inner)
    return flops / best / 1e9


@functools.cache
def cpu_rates() -> Rates:
    """The CPU's fp32 and bf16 GEMM rates, measured once per process."""
    return Rates(float32=gemm_rate("float32"), bfloat16=gemm_rate("bfloat16"))


def cpu_bf16_fast() -> bool:
    """True where bf16 products measurably beat fp32 on this CPU (see the module docstring)."""
    return cpu_rates().bf16_fast


def cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def auto_bf16(device: str) -> bool:
    """Whether ``auto`` computes in bf16 on ``device``."""
    if device.startswith("cuda"):
        return cuda_bf16()
    if device == "cpu":
        return cpu_bf16_fast()
    return False


def inference_dtype_name(device: str) -> str:
    """``auto`` for inference (sampling, evaluation): bf16 where it is fast, fp16 on CUDA GPUs without bf16
    (V100, T4), fp32 elsewhere."""
    if auto_bf16(device):
        return "bfloat16"
    if device.startswith("cuda"):
        return "float16"
    return "float32"


def describe(device: str, chosen: str) -> str:
    """Why ``auto`` chose ``chosen`` on ``device``, in words (for logs and benchmark output)."""
    if device == "cpu":
        r = cpu_rates()
        verdict = "fast" if r.bf16_fast else "emulated or not faster"
        return (
            f"{chosen}: measured GEMM {r.bfloat16:.0f} GFLOP/s in bf16 vs {r.float32:.0f} in fp32 on this CPU "
            f"(bf16 {verdict}; bf16 is chosen from {FAST_MARGIN:g}x)"
        )
    if device.startswith("cuda"):
        return f"{chosen}: CUDA {'with' if cuda_bf16() else 'without'} bf16 support"
    return f"{chosen}: {device} (fp32 unless set)"
