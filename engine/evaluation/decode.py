"""Greedy decoding for evaluation on the sampler's decoder: continuous batching over a preallocated KV cache.

The same machinery as sampling (:mod:`engine.sampling.decoders`: the fused Llama-family step, or the model's own
forward for other architectures), with top-1 instead of top-k/top-p and one row per question:

- prompts are prefilled in groups (right-padded, so each prompt's positions are those of an unpadded run; the LM
  head is applied to each prompt's last position only), the argmax of the last position is the first token, and
  each prompt's keys/values are copied into a free row of the decode cache;
- every decode step feeds each active row its last token and takes the argmax (in fp32 on a CPU with fast bf16,
  of bf16 candidates rescored in fp32: :mod:`engine.evaluation.greedy_head`); a row ends at EOS or at
  ``max_new_tokens`` tokens and leaves the batch at once (the last rows move into its place), and the next prompts
  are admitted while there is room;
- results come back in chunks as questions finish, so that the caller can store them as it goes.

Outputs are the tokens ``model.generate(do_sample=False)`` would produce, up to float rounding: the products run at
other batch shapes than ``generate``'s left-padded batches, so where two logits are within rounding of each other
the argmax can differ (``benchmarks/evaluation.py`` measures the share of token-identical outputs in fp32).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from engine.evaluation.generate import Generated
from engine.models import eos_token_ids

if TYPE_CHECKING:
    import torch

PREFILL_GROUP = 16  # prompts per prefill forward: enough to batch the GEMMs, little padding


def prefill_group(model: Any, prompts: list[list[int]], device: Any) -> tuple[torch.Tensor, list[Any]]:
    """One right-padded forward over ``prompts``: the logits at each prompt's last position ([n, V]) and the
    per-layer keys/values ([n, kv_heads, width, head_dim]; row i's first ``len(prompts[i])`` positions are its
    own)."""
    import torch

    from engine.sampling.cache import output_cache

    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p)
        mask[row, : len(p)] = 1
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    rows = torch.arange(len(prompts), device=device)
    ids, mask = ids.to(device), mask.to(device)
    inner, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if inner is not None and head is not None:  # the LM head on the last positions only
        out = inner(input_ids=ids, attention_mask=mask, use_cache=True)
        logits = head(out.last_hidden_state[rows, last])
    else:
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        logits = out.logits[rows, last]
    cache = output_cache(out)
    return logits, [(layer.keys, layer.values) for layer in cache.layers]


class _Batch:
    """The decode batch: rows ``0 .. n_active-1`` hold questions; host-side state per row."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        encoded: list[list[int]],
        rows: int,
        max_new: int,
        fused: bool | None,
        approx_head: bool,
    ) -> None:
        import torch

        from engine.evaluation.greedy_head import greedy_head_for
        from engine.sampling.decoders import PACK_MIN_WORK, make_decoder

        self.model, self.tokenizer, self.encoded, self.rows, self.max_new = model, tokenizer, encoded, rows, max_new
        self.device = next(model.parameters()).device
        self.eos = eos_token_ids(model, tokenizer)
        self.eos_t = torch.tensor(self.eos or [-1], dtype=torch.long)
        max_len = max(len(e) for e in encoded) + max_new
        self.decoder = make_decoder(model, rows, max_len, fused, pack=len(encoded) * max_new >= PACK_MIN_WORK)
        self.head = greedy_head_for(self.decoder) if approx_head else None
        self.max_len = max_len
        self.item = torch.zeros(rows, dtype=torch.long)  # index into the items
        self.pos = torch.zeros(rows, dtype=torch.long)  # cache position of the next input token
        self.last = torch.zeros(rows, dtype=torch.long)  # the next input token
        self.ntok = torch.zeros(rows, dtype=torch.long)
        self.tokens: dict[int, list[int]] = {}
        self.done: list[int] = []  # items finished since the last take
        self.n_active = 0
        self.steps = self.decoded = 0

    def admit(self, group: list[int]) -> None:
        """Prefill ``group`` (item indices; at most the free rows) and place the unfinished ones in rows."""
        import torch

        logits, layer_kv = prefill_group(self.model, [self.encoded[i] for i in group], self.device)
        first = logits.argmax(dim=-1).cpu().tolist()
        for g, i in enumerate(group):
            tok = int(first[g])
            if tok in self.eos:
                self.tokens[i] = []
                self.done.append(i)
                continue
            self.tokens[i] = [tok]
            self.decoded += 1
            if self.max_new <= 1:
                self.done.append(i)
                continue
            length, slot = len(self.encoded[i]), self.n_active
            self.decoder.load_prompt(
                torch.tensor([slot], device=self.device),
                [(k[g : g + 1, :, :length], v[g : g + 1, :, :length]) for k, v in layer_kv],
            )
            self.item[slot], self.pos[slot], self.last[slot], self.ntok[slot] = i, length, tok, 1
            self.n_active += 1

    def step(self) -> None:
        """One greedy token for every active row; finished rows leave the batch."""
        import torch

        n = self.n_active
        pos = self.pos[:n]
        args = (self.last[:n].to(self.device), pos.to(self.device), int(pos.max()) + 1)
        if self.head is not None:
            nxt = self.head.argmax(self.decoder.hidden(*args)).cpu()
        else:
            nxt = self.decoder.step(*args).argmax(dim=-1).cpu()
        self.steps += 1
        self.pos[:n] += 1
        keep = ~torch.isin(nxt, self.eos_t)
        items, values = self.item[:n].tolist(), nxt.tolist()
        for r in torch.nonzero(keep).flatten().tolist():
            self.tokens[items[r]].append(values[r])
        self.decoded += int(keep.sum())
        self.ntok[:n] += keep.long()
        self.last[:n] = torch.where(keep, nxt, self.last[:n])
        done = ~keep | (self.ntok[:n] >= self.max_new)
        if not bool(done.any()):
            return
        done_idx = torch.nonzero(done).flatten()
        self.done.extend(items[r] for r in done_idx.tolist())
        n_new = n - len(done_idx)
        holes = done_idx[done_idx < n_new]
        if len(holes):
            movers = torch.arange(n_new, n)[~done[n_new:n]]
            for buf in (self.item, self.pos, self.last, self.ntok):
                buf[holes] = buf[movers]
            self.decoder.move_rows(movers.to(self.device), holes.to(self.device))
        self.n_active = n_new

    def take(self, items: Sequence[tuple[Any, str]]) -> list[Generated]:
        out = []
        for i in self.done:
            new = self.tokens.pop(i)
            out.append(Generated(items[i][0], self.tokenizer.decode(new, skip_special_tokens=True), new))
        self.done = []
        return out


def greedy_engine(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[Any, str]],
    *,
    max_new_tokens: int,
    rows: int,
    fused: bool | None = None,
    chunk: int | None = None,
    approx_head: bool = True,
    stats: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[list[Generated]]:
    """Greedy continuations of ``(key, prompt)`` items, at most ``rows`` questions decoded at a time; yields the
    finished ones in lists of about ``chunk`` (default ``rows``). ``approx_head``: the LM head's argmax through
    :class:`engine.evaluation.greedy_head.GreedyHead` where that applies (fp32 on a CPU with fast bf16); False: the
    plain fp32 head. ``stats`` (if given) receives steps, seconds, decoded tokens, rows and, with the bf16 head,
    the rows it left to the full fp32 product."""
    import torch

    if not items:
        return
    encoded = tokenizer([p for _k, p in items], add_special_tokens=True)["input_ids"]
    order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))  # similar lengths prefill together
    rows = max(1, min(rows, len(items)))
    chunk = chunk or rows
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        batch = _Batch(model, tokenizer, encoded, rows, max_new_tokens, fused, approx_head)
    if log:
        head = f", LM head argmax from bf16 with {batch.head.k} fp32-rescored candidates" if batch.head else ""
        log(
            f"greedy decoding {len(items)} questions: {type(batch.decoder).__name__}, {rows} rows x "
            f"{batch.max_len} positions{head}"
        )
    pending: list[Generated] = []
    next_item = 0
    while next_item < len(order) or batch.n_active:
        with torch.inference_mode():  # not around the yield: the caller's code runs outside it
            free = rows - batch.n_active
            if free and next_item < len(order):
                group = order[next_item : next_item + min(free, PREFILL_GROUP)]
                next_item += len(group)
                batch.admit(group)
            if batch.n_active:
                batch.step()
        pending.extend(batch.take(items))
        if len(pending) >= chunk or (pending and next_item >= len(order) and not batch.n_active):
            out, pending = pending, []
            yield out
    if stats is not None:
        stats.update(steps=batch.steps, seconds=time.perf_counter() - started, decoded_tokens=batch.decoded, rows=rows)
        if batch.head is not None:
            stats.update(head_rows=batch.head.rows, head_fallback_rows=batch.head.fallback_rows)
