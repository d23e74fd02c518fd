"""Batched greedy generation for evaluation: prompts sorted by length (little padding), left-padded, decoded
with ``model.generate`` (KV cache) until EOS or ``max_new_tokens``; results come back per batch so that the
caller can store them as it goes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.models import eos_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Generated:
    key: Any
    text: str
    token_ids: list[int]  # generated tokens, without EOS and padding


def greedy_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[Any, str]],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> Iterator[list[Generated]]:
    """Greedy continuations of ``(key, prompt)`` items, one list per batch (longest prompts first)."""
    import torch
    from transformers import GenerationConfig

    if not items:
        return
    device = next(model.parameters()).device
    eos = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    encoded = tokenizer([p for _k, p in items], add_special_tokens=True)["input_ids"]
    order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))
    gen_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad_id,
    )
    model.eval()
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = encoded[i]
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_config)
        results = []
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            cut = next((j for j, t in enumerate(new) if t in eos), len(new))
            new = new[:cut]
            text = tokenizer.decode(new, skip_special_tokens=True)
            results.append(Generated(items[i][0], text, new))
        yield results
