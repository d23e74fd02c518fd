"""A preallocated per-row KV cache for continuous-batching decode.

Row ``r`` of the batch keeps its tokens at cache positions ``0 .. lens[r]-1`` (prompt first, left-aligned),
so rows of different questions and lengths live side by side without padding in the middle; a boolean mask
hides each row's unused tail. Nothing is re-grown: the buffers are allocated once for the longest prompt plus
``max_new_tokens``; finished rows are overwritten by moving the batch's last rows into their slots.

The object is duck-typed to what transformers' attention layers call (``update(key, value, layer_idx)``),
so the model's own forward runs on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class RowKVCache:
    is_compileable = False
    is_sliding = ()  # read by some transformers helpers; plain full attention here

    def __init__(self, rows: int, max_len: int, device: torch.device | str, dtype: torch.dtype) -> None:
        self.rows = rows
        self.max_len = max_len
        self.device = device
        self.dtype = dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # set by the sampler before each decode forward
        self.batch = 0
        self.kv_len = 0
        self.positions: torch.Tensor | None = None  # [batch] write position of the new token per row
        self._arange: torch.Tensor | None = None

    # -- allocation ---------------------------------------------------------------------------------------
    def allocate_like(self, layer_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Allocate one buffer per layer shaped like the prompt's keys/values ``[1, heads, P, head_dim]``."""
        import torch

        if self.keys:
            return
        for k, v in layer_kv:
            self.keys.append(
                torch.zeros(self.rows, k.shape[1], self.max_len, k.shape[3], dtype=k.dtype, device=k.device)
            )
            self.values.append(
                torch.zeros(self.rows, v.shape[1], self.max_len, v.shape[3], dtype=v.dtype, device=v.device)
            )
        self._arange = torch.arange(self.rows, device=self.keys[0].device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def load_prompt(self, slots: torch.Tensor, layer_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy one prompt's keys/values (batch 1) into every row slot in ``slots`` (the branch expansion)."""
        self.allocate_like(layer_kv)
        for layer, (k, v) in enumerate(layer_kv):
            length = k.shape[2]
            self.keys[layer][slots, :, :length] = k[0].to(self.dtype)
            self.values[layer][slots, :, :length] = v[0].to(self.dtype)

    def move_rows(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy rows ``src`` over rows ``dst`` (batch compaction after rows finish)."""
        for buf in self.keys + self.values:
            buf[dst] = buf[src]

    # -- the interface transformers' attention calls -------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kw: Any):
        if key_states.shape[2] != 1:
            raise RuntimeError("RowKVCache serves single-token decode steps only")
        rows = self._arange[: self.batch]
        self.keys[layer_idx][rows, :, self.positions] = key_states[:, :, 0].to(self.dtype)
        self.values[layer_idx][rows, :, self.positions] = value_states[:, :, 0].to(self.dtype)
        return (
            self.keys[layer_idx][: self.batch, :, : self.kv_len],
            self.values[layer_idx][: self.batch, :, : self.kv_len],
        )

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_len

    def __len__(self) -> int:
        return len(self.keys)


def cache_argument(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` from transformers 5.24 on (``past_key_values``
    is deprecated there, to be removed in 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache of a forward's output, under either name (see :func:`cache_argument`)."""
    cache = out.get("cache") if hasattr(out, "get") else getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


#: Share of the memory available when a decode batch is sized that its KV cache may take (the model, the
#: activations and the rest of the process need the remainder).
CACHE_MEMORY_SHARE = 0.5


def available_memory_bytes(device: Any) -> int | None:
    """Free memory on ``device`` now: CUDA's free bytes, on a CPU ``MemAvailable`` of /proc/meminfo (None where
    neither can be read)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rows_that_fit(
    config: Any, max_len: int, dtype: Any, device: Any, wanted: int, limit_mb: float | None = None
) -> int:
    """How many rows of ``max_len`` positions a decode batch takes: ``wanted``, fewer where their KV cache would
    exceed ``limit_mb`` (a setting) or :data:`CACHE_MEMORY_SHARE` of the memory available now; at least one."""
    per_row = kv_cache_bytes(config, 1, max_len, dtype)
    budgets = [limit_mb * 2**20] if limit_mb else []
    available = available_memory_bytes(device)
    if available is not None:
        budgets.append(available * CACHE_MEMORY_SHARE)
    if not budgets:
        return max(1, wanted)
    return max(1, min(wanted, int(min(budgets) // per_row)))


def kv_cache_bytes(config: Any, rows: int, max_len: int, dtype: Any) -> int:
    """Bytes of the keys and values of ``rows`` sequences of ``max_len`` positions, all layers."""
    import torch

    heads = getattr(config, "num_attention_heads", 1) or 1
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    size = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * rows * kv_heads * max_len * head_dim * size
