"""The LM head's argmax in fp32 at the cost of a bf16 product, for greedy evaluation on a CPU.

The LM head is the largest matrix of a small student (49k x 576 of the bundled one's 135M parameters, a fifth of
a decode step's FLOPs) and greedy decoding needs only its argmax. Where a bf16 GEMM is fast
(:func:`engine.precision.cpu_bf16_fast`), :class:`GreedyHead` takes the :data:`CANDIDATES` largest logits of a
bf16 product, recomputes those candidates' logits exactly in fp32 and returns the best of them -- the fp32
argmax, whenever a rounding bound proves that no other token can beat it:

- bf16 rounds the hidden state and the weights to 8 significant bits (unit roundoff ``u = 2**-8``), and the
  product's output once more, so a token's bf16 logit ``a_t`` is off from its exact one ``e_t`` by at most
  ``(2u + u^2) * sum_i |x_i w_ti| + u * |a_t|`` (plus fp32 accumulation, far smaller), and
  ``sum_i |x_i w_ti| <= ||x|| * max_t ||w_t||`` (Cauchy-Schwarz);
- a token outside the candidates has ``a_t <= a_k`` (the k-th candidate's bf16 logit), and ``a + u|a|`` grows
  with ``a``, so its exact logit is below ``a_k + u|a_k| + (2u + u^2) ||x|| max_t ||w_t||``; where the best
  candidate's exact logit is above that, it is the argmax;
- rows where it is not (0.2% of the rows of a 64-question StrategyQA evaluation of a trained checkpoint, with 32
  candidates) get the full fp32 product.

Outputs are therefore the fp32 decoder's greedy tokens up to ties within fp32 rounding, and the head costs a
bf16 GEMM plus ``rows x CANDIDATES`` dot products (measured at 64 rows on an AVX512-BF16 CPU: 10 ms against the
packed fp32 head's 33 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CANDIDATES = 32  # bf16 candidates rescored in fp32 per row (with 8 a tenth of the rows needed the full product)
UNIT_ROUNDOFF = 2.0**-8  # bf16: 8 significant bits


class GreedyHead:
    """``argmax(x @ weight.T)`` per row of an fp32 ``x``, through a bf16 copy of ``weight`` (module docstring)."""

    def __init__(self, weight: torch.Tensor, candidates: int = CANDIDATES) -> None:
        import torch

        self.weight = weight = weight.detach()
        self.approx = weight.to(torch.bfloat16)
        self.k = min(candidates, weight.shape[0])
        self.max_row_norm = float(weight.norm(dim=1).max())
        self.rows = self.fallback_rows = 0
        self._logits: torch.Tensor | None = None  # the bf16 product's output, kept between steps (see argmax)

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        u = UNIT_ROUNDOFF
        # the bf16 logits go into one kept buffer and their top-k is taken in bf16: a fresh [B, V] product and
        # an fp32 copy of it were ~60 MB of new pages per step at 200 rows (10k page faults, half the head's time)
        rows = x.shape[0]
        if self._logits is None or self._logits.shape[0] < rows:
            self._logits = torch.empty(rows, self.approx.shape[0], dtype=torch.bfloat16, device=x.device)
        approx = torch.mm(x.to(torch.bfloat16), self.approx.t(), out=self._logits[:rows])
        top, candidates = approx.topk(self.k, dim=-1)  # [B, k], largest first
        top = top.float()
        exact = torch.bmm(self.weight[candidates], x.unsqueeze(-1)).squeeze(-1)  # [B, k] fp32
        best, at = exact.max(dim=-1)
        bound = (2 * u + u * u) * 1.01 * x.norm(dim=-1) * self.max_row_norm + u * 1.01 * top[:, -1].abs()
        proven = best > top[:, -1] + bound
        tokens = candidates.gather(1, at.unsqueeze(1)).squeeze(1)
        self.rows += x.shape[0]
        if not bool(proven.all()):
            unproven = ~proven
            self.fallback_rows += int(unproven.sum())
            tokens[unproven] = F.linear(x[unproven], self.weight).argmax(dim=-1)
        return tokens


def greedy_head_for(decoder: Any) -> GreedyHead | None:
    """A :class:`GreedyHead` for an fp32 fused decoder on a CPU where bf16 products are fast, else None (the
    decoder's own logits and their argmax)."""
    import torch

    from engine.precision import cpu_bf16_fast
    from engine.sampling.decoders import FusedLlamaDecoder

    if not isinstance(decoder, FusedLlamaDecoder) or decoder.dtype != torch.float32:
        return None
    if decoder.device.type != "cpu" or not cpu_bf16_fast():
        return None
    return GreedyHead(decoder.lm_head.weight)
