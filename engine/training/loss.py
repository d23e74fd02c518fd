"""The LM head and the cross-entropy in one pass over chunks of the labelled positions, gradients included.

A step's logits are ``[labelled tokens, vocabulary]``: ~1,000 x 49,152 for a batch of 8 StrategyQA rationales,
160 MB in fp32, and the plain ``F.cross_entropy(lm_head(h))`` keeps the logits, their fp32 copy, the
log-softmax and the gradient of each alive at once. Allocations that large are fresh ``mmap`` s that the
kernel zero-fills page by page: on a CPU that was a third of a training step's wall time, as system time
(2.4 million page faults in 6 steps of the bundled student). Here the forward runs ``CHUNK`` positions at a
time: logits of the chunk, their log-sum-exp and loss, and at once the gradient of the loss with respect to
the chunk's logits (``softmax - one_hot``), which gives the chunk's share of the hidden states' and the weight's
gradients; the backward only scales those by the incoming gradient. Every buffer is a chunk (~25 MB in fp32),
which the allocator reuses from step to step, and nothing is recomputed. The same idea as Liger-Kernel's fused
linear cross-entropy, in plain torch.

The products run in ``dtype`` (bf16 under autocast), the softmax and the loss in fp32; the weight's gradient is
accumulated over the chunks in ``dtype`` (as autocast's own backward computes it): the loss equals
``F.cross_entropy(logits.float(), targets, reduction="sum")`` up to float rounding (tests/test_training_unit.py
checks the loss and both gradients).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CHUNK = 128  # labelled positions per chunk: [128, 49152] fp32 is 25 MB, under glibc's largest mmap threshold


def _function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, dtype, chunk):  # type: ignore[override]
            w = weight.to(dtype)
            n = hidden.shape[0]
            grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
            grad_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, n, chunk):
                h = hidden[start : start + chunk].to(dtype)
                t = targets[start : start + chunk]
                logits = (h @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
                grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
                grad[torch.arange(len(t), device=t.device), t] -= 1.0
                g = grad.to(dtype)
                grad_hidden[start : start + chunk] = (g @ w).to(hidden.dtype)
                grad_weight.addmm_(g.t(), h)  # one rounding to ``dtype`` per chunk (the product accumulates in fp32)
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.weight_dtype = weight.dtype
            return total

        @staticmethod
        def backward(ctx, grad_output):  # type: ignore[override]
            grad_hidden, grad_weight = ctx.saved_tensors
            return grad_hidden * grad_output, (grad_weight * grad_output).to(ctx.weight_dtype), None, None, None

    return LinearCrossEntropy


_FN: Any = None


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: Any = None, chunk: int = CHUNK
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, reduction="sum")`` (``hidden``: [N, H], ``weight``: [V, H],
    ``targets``: [N]) computed chunk by chunk with its gradients, the products in ``dtype`` (default: the
    weight's)."""
    global _FN
    if _FN is None:
        _FN = _function()
    return _FN.apply(hidden, weight, targets, dtype or weight.dtype, chunk)
