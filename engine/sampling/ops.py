"""Tensor kernels of the sampler: top-k then top-p inside the k, seeded per question, and the dtype choice.

Everything here is plain torch on whatever device the logits live on. Sorting the full vocabulary (49k for
SmolLM2) at every step is what makes ``generate``'s top-p slow on a CPU; here ``torch.topk`` picks the k
candidates first and the nucleus is cut inside those k, which is exactly the paper's top-k 10 -> top-p 0.95
order (the same order as transformers' ``TopKLogitsWarper`` followed by ``TopPLogitsWarper``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def question_seed(seed: int, key: int) -> int:
    """A 63-bit seed for one question, stable across runs, platforms and batch compositions."""
    digest = hashlib.sha256(f"sert-tui:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def question_generator(seed: int, key: int, device: torch.device | str = "cpu") -> torch.Generator:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(question_seed(seed, key))
    return gen


def topk_values(logits: torch.Tensor, k: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(logits, k, dim=-1)`` (values descending), computed in two stages on a CPU.

    The k largest entries of a row lie in the k chunks with the largest maxima, so the row's chunk maxima
    (one cheap vectorised pass) pick k chunks and the exact top-k is taken among their ``k * chunk``
    candidates: about 3.5x faster than ``torch.topk`` over 49k entries on a CPU. Elsewhere (GPU) or for
    small vocabularies this is plain ``torch.topk``.
    """
    import torch

    rows, vocab = logits.shape
    if logits.device.type != "cpu" or vocab < 4 * k * chunk:
        return torch.topk(logits, k, dim=-1)
    pad = (-vocab) % chunk
    if pad:
        logits = torch.nn.functional.pad(logits, (0, pad), value=float("-inf"))
    chunk_max = logits.view(rows, -1, chunk).amax(dim=-1)
    best_chunks = torch.topk(chunk_max, k, dim=-1).indices  # [rows, k]
    offsets = torch.arange(chunk, device=logits.device)
    candidates = (best_chunks.unsqueeze(-1) * chunk + offsets).view(rows, k * chunk)
    values, index = torch.topk(logits.gather(1, candidates), k, dim=-1)
    return values, candidates.gather(1, index)


LSE_CHUNK_ROWS = 32  # rows per chunk of logsumexp_rows: a [32, V] fp32 scratch (6 MB at V = 49k)


def logsumexp_rows(logits: torch.Tensor, chunk: int = LSE_CHUNK_ROWS) -> torch.Tensor:
    """``torch.logsumexp(logits.float(), dim=-1)`` of [B, V] logits, bit for bit, in fp32 ([B]), through one
    reused [chunk, V] fp32 scratch.

    The plain expression allocates two [B, V] fp32 temporaries per call (the upcast and ``logits - max``); at
    decode sizes those are tens of MB, above glibc's mmap threshold, so every sampling step got fresh pages from
    the kernel and zero-filled them: 23k page faults and ~37 ms of a ~200 ms bf16 step at 240 rows x 49k
    (``benchmarks/sampling.py``), against ~6 ms here. The steps are torch's own (``amax``, infinite maxima set to
    0, ``exp(x - max)`` summed, ``log``, ``+ max``) on the same rows, so the result is the same.
    """
    import torch

    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return out
    scratch = torch.empty(min(chunk, rows), vocab, dtype=torch.float32, device=logits.device)
    for start in range(0, rows, chunk):
        part = logits[start : start + chunk]
        buf = scratch[: part.shape[0]]
        buf.copy_(part)
        maxes = buf.amax(dim=-1, keepdim=True)
        maxes.masked_fill_(maxes.abs() == float("inf"), 0.0)
        dst = out[start : start + chunk]
        torch.sum(buf.sub_(maxes).exp_(), dim=-1, out=dst)
        dst.log_().add_(maxes.squeeze(-1))
    return out


def branch_tokens(logprobs: torch.Tensor, k: int, excluded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most probable next tokens ([V] log-probs) outside ``excluded`` (ids that never start a branch),
    most probable first: ``(log-probs, ids)``, the log-probs those of the full distribution."""
    import torch

    return torch.topk(logprobs.index_fill(0, excluded, float("-inf")), k)


def sample_top_k_top_p(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    top_k: int,
    top_p: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverse CDF over the top-k, top-p truncated distribution.

    ``logits``: [B, V] raw scores; ``uniforms``: [B] numbers in [0, 1) (one per row, from the row's
    question generator). Returns ``(tokens [B] int64, logprobs [B] float32)`` where the log-prob is the
    token's log-probability under the model's plain distribution, ``log_softmax(logits)`` at temperature 1
    over the full vocabulary -- the statistic the perplexity filter uses, independent of the truncation.
    """
    tokens, logprobs, _margins = sample_step(logits, uniforms, top_k, top_p, temperature)
    return tokens, logprobs


def sample_step(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    top_k: int,
    top_p: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_top_k_top_p` plus each row's margin ``p(top-1) - p(top-2)`` ([B] float32) of the same plain
    distribution (softmax of ``logits`` at temperature 1 over the full vocabulary), from the top-k values and the
    log-sum-exp the sampling computes anyway: the per-token statistic of path confidence (CoT-decoding)."""
    import torch

    k = min(top_k, logits.shape[-1])
    top_values, top_index = topk_values(logits, max(k, min(2, logits.shape[-1])))  # sorted, descending
    top_values = top_values.float()
    lse = logsumexp_rows(logits) if logits.device.type == "cpu" else torch.logsumexp(logits.float(), dim=-1)
    plain = torch.exp(top_values[:, :2] - lse.unsqueeze(-1))
    margins = plain[:, 0] - plain[:, 1] if plain.shape[-1] > 1 else plain[:, 0]
    top_values, top_index = top_values[:, :k], top_index[:, :k]
    probs = torch.softmax(top_values / temperature, dim=-1)
    if top_p < 1.0:
        # keep a candidate while the mass of the more probable ones is still below top_p (the first always stays)
        before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    target = uniforms.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    # the kept candidates are a prefix; clamping to the last kept one guards against u * total rounding up
    last_kept = (probs > 0).sum(dim=-1) - 1
    choice = torch.minimum((cdf <= target).sum(dim=-1), last_kept)
    tokens = top_index.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
    chosen = top_values.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
    logprobs = chosen - lse
    return tokens, logprobs, margins


def plain_margins(logprobs: torch.Tensor) -> torch.Tensor:
    """``p(top-1) - p(top-2)`` of each row of full-vocabulary log-probs ([..., V] -> [...]); the prefill's
    counterpart of :func:`sample_step`'s margins (the branch token's position)."""
    import torch

    top = torch.exp(torch.topk(logprobs.float(), min(2, logprobs.shape[-1]), dim=-1).values)
    return top[..., 0] - top[..., 1] if top.shape[-1] > 1 else top[..., 0]


def truncated_distribution(logits: torch.Tensor, top_k: int, top_p: float, temperature: float = 1.0) -> torch.Tensor:
    """The full-vocabulary distribution ``sample_top_k_top_p`` draws from ([B, V]); for tests and checks."""
    import torch

    k = min(top_k, logits.shape[-1])
    top_values, top_index = torch.topk(logits.float(), k, dim=-1)
    probs = torch.softmax(top_values / temperature, dim=-1)
    if top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, top_index, probs)


def choose_dtype(requested: str, device: str, student_dtype: str = "auto") -> torch.dtype:
    """The compute dtype of sampling: an explicit ``sampling.dtype`` wins, then an explicit ``student.dtype``;
    ``auto`` is :func:`engine.precision.inference_dtype_name` (bf16 where it is measurably fast)."""
    from engine.models import resolve_dtype
    from engine.precision import inference_dtype_name

    if requested != "auto":
        return resolve_dtype(requested, device)
    if student_dtype != "auto":
        return resolve_dtype(student_dtype, device)
    return resolve_dtype(inference_dtype_name(device), device)
