"""Single-token decode steps over a preallocated per-row KV cache: a generic one (the model's own forward) and
a fused one for Llama-family models (Llama, Mistral, Qwen2: RMSNorm, rotary, GQA, SwiGLU).

Both keep row ``r``'s tokens at cache positions ``0 .. pos[r]-1`` (prompt first); the sampler writes each
new token at ``pos[r]`` and a mask hides the unused tail. Both expose the same small interface:

- ``load_prompt(slots, layer_kv)``: copy one prompt's keys/values (``[1, heads, P, head_dim]`` per layer, from a
  transformers prefill) into every row of ``slots`` -- the branch expansion, no recomputation;
- ``move_rows(src, dst)``: batch compaction when rows finish;
- ``step(tokens, positions, kv_len) -> logits [B, V]`` for rows ``0 .. B-1``.

The fused decoder is where the CPU time goes, so it does the minimum per layer: one GEMM for q/k/v (weights
concatenated once, the attention scale folded into q -- exact for power-of-two head dims), rotary on q and k
together, keys stored transposed (``[rows, kv_heads, head_dim, T]``: ``q @ K`` is then a plain GEMM, ~4x
faster on CPU than the transposed product SDPA does for one query), grouped-query heads folded into the
query dimension (no key/value repetition), residual adds fused into the output GEMMs (``addmm_``), one GEMM for
gate and up. Its output equals the model's forward up to float rounding (tests check this).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.sampling.cache import RowKVCache, cache_argument

if TYPE_CHECKING:
    import torch

FUSED_MODEL_TYPES = ("llama", "mistral", "qwen2")
PACK_MIN_WORK = 2000  # sequence-steps from which packing the weights for MKL pays for itself (~1 s to pack)
FULL_LENGTH_FROM = 0.5  # attend over the whole cache once the longest row uses this share of it
ROTARY_BLOCK = 64  # positions per call of the model's rotary module when the fused tables are built


def fused_supported(model: Any) -> bool:
    """Whether :class:`FusedLlamaDecoder` reproduces this model's forward."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FUSED_MODEL_TYPES:
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return False
    if getattr(cfg, "sliding_window", None) and (cfg.model_type == "mistral" or getattr(cfg, "use_sliding_window", 0)):
        return False
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(model, "lm_head") or not hasattr(inner, "rotary_emb"):
        return False
    attn = layers[0].self_attn
    if getattr(attn, "o_proj", None) is None or getattr(attn.o_proj, "bias", None) is not None:
        return False
    if getattr(model, "peft_config", None) is not None:
        return False
    return all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj")) and hasattr(layers[0].mlp, "gate_proj")


class HFDecoder:
    """Decode steps through the model's own forward (any decoder-only transformers model with a KV cache)."""

    def __init__(self, model: Any, rows: int, max_len: int) -> None:
        import torch

        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cache = RowKVCache(rows, max_len, self.device, self.dtype)
        impl = getattr(model.config, "_attn_implementation", None) or "eager"
        self._bool_mask = impl == "sdpa"
        self._arange = torch.arange(max_len, device=self.device)
        self._cache_arg = cache_argument(model)

    def load_prompt(self, slots: torch.Tensor, layer_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.cache.load_prompt(slots, layer_kv)

    def move_rows(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        self.cache.move_rows(src, dst)

    def nbytes(self) -> int:
        return self.cache.nbytes()

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        import torch

        cache = self.cache
        cache.batch, cache.kv_len, cache.positions = tokens.shape[0], kv_len, positions
        visible = self._arange[:kv_len].unsqueeze(0) <= positions.unsqueeze(1)
        if self._bool_mask:
            mask = visible[:, None, None, :]
        else:
            mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
            mask.masked_fill_(~visible, torch.finfo(self.dtype).min)
            mask = mask[:, None, None, :]
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            position_ids=positions.unsqueeze(1),
            attention_mask=mask,
            use_cache=True,
            **{self._cache_arg: cache},
        )
        return out.logits[:, -1]


class FusedLlamaWeights:
    """The model's weights rearranged for :class:`FusedLlamaDecoder` (built once per sampler: a snapshot)."""

    def __init__(self, model: Any, max_len: int, pack: bool = True) -> None:
        import torch

        cfg = model.config
        inner = model.model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.max_len = max_len
        scale = self.head_dim**-0.5
        pack = pack and packed_gemm_available(self.dtype, self.device)
        self.packed = pack
        with torch.no_grad():
            self.layers = []
            for layer in inner.layers:
                attn, mlp = layer.self_attn, layer.mlp
                scale_q = getattr(attn, "scaling", scale)
                wqkv = torch.cat([attn.q_proj.weight * scale_q, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
                bqkv = None
                if attn.q_proj.bias is not None:
                    bqkv = torch.cat([attn.q_proj.bias * scale_q, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
                wgu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous()
                self.layers.append(
                    (
                        layer.input_layernorm.weight,
                        _eps(layer.input_layernorm),
                        Linear(wqkv, bqkv, pack),
                        Linear(attn.o_proj.weight, None, pack),
                        layer.post_attention_layernorm.weight,
                        _eps(layer.post_attention_layernorm),
                        Linear(wgu, None, pack),
                        Linear(mlp.down_proj.weight, None, pack),
                    )
                )
            self.embed = inner.embed_tokens.weight
            self.norm_w, self.norm_eps = inner.norm.weight, _eps(inner.norm)
            self.lm_head = Linear(model.lm_head.weight, None, pack)
            # rotary tables for every position, from the model's own rotary module (any rope scaling type), in
            # blocks of ROTARY_BLOCK positions: each block is the same computation whatever the table's length,
            # so a position's entry does not depend on the longest prompt of the run
            blocks = -(-max_len // ROTARY_BLOCK)
            probe = torch.zeros(1, ROTARY_BLOCK, self.head_dim, dtype=self.dtype, device=self.device)
            block = torch.arange(ROTARY_BLOCK, device=self.device).view(1, -1)
            parts = [inner.rotary_emb(probe, position_ids=block + b * ROTARY_BLOCK) for b in range(blocks)]
            half = self.head_dim // 2
            cos = torch.cat([c[0] for c, _s in parts])[:max_len].to(self.dtype)
            sin = torch.cat([s[0] for _c, s in parts])[:max_len].to(self.dtype)
            # rotate_half(x) * sin == roll(x, half) * [-sin_1, sin_2]
            self.cos = cos.contiguous()
            self.sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1).contiguous()


class FusedLlamaDecoder:
    """A fused decode step for Llama-family weights (see the module docstring)."""

    def __init__(self, weights: FusedLlamaWeights, rows: int, max_len: int) -> None:
        import torch

        if weights.max_len < max_len:
            raise ValueError("rotary tables too short for this cache")
        self.weights = weights
        w = weights
        self.device, self.dtype = w.device, w.dtype
        self.heads, self.kv_heads, self.head_dim, self.group = w.heads, w.kv_heads, w.head_dim, w.group
        self.layers, self.embed, self.lm_head = w.layers, w.embed, w.lm_head
        self.norm_w, self.norm_eps, self.cos, self.sin = w.norm_w, w.norm_eps, w.cos, w.sin
        self.rows, self.max_len = rows, max_len
        # keys are stored transposed ([.., D, T]: ``q @ K`` a plain GEMM) in fp32, where that product is ~2x
        # faster than ``q @ K.T``; in bf16/fp16 both products cost the same and the plain layout ([.., T, D])
        # makes writing a new token's key one contiguous run per head instead of D scattered cache lines
        self.keys_transposed = self.dtype == torch.float32
        shape_v = (rows, self.kv_heads, max_len, self.head_dim)
        shape_k = (rows, self.kv_heads, self.head_dim, max_len) if self.keys_transposed else shape_v
        n = len(self.layers)
        self.keys = [torch.zeros(shape_k, dtype=self.dtype, device=self.device) for _ in range(n)]
        self.values = [torch.zeros(shape_v, dtype=self.dtype, device=self.device) for _ in range(n)]
        self._arange = torch.arange(max_len, device=self.device)
        # flat offsets of (row, kv head, dim) at position 0 in a [.., T, D] buffer (stride D per position) and in
        # a [.., D, T] one (stride 1)
        r = torch.arange(rows, device=self.device).view(rows, 1, 1)
        hd = torch.arange(self.kv_heads, device=self.device).view(1, -1, 1)
        dd = torch.arange(self.head_dim, device=self.device).view(1, 1, -1)
        self._td_base = ((r * self.kv_heads + hd) * max_len * self.head_dim + dd).view(rows, -1)
        self._dt_base = ((r * self.kv_heads + hd) * self.head_dim + dd).mul(max_len).view(rows, -1)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def load_prompt(self, slots: torch.Tensor, layer_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (k, v) in enumerate(layer_kv):
            length = k.shape[2]
            if self.keys_transposed:
                self.keys[layer][slots, :, :, :length] = k[0].transpose(-1, -2).to(self.dtype)
            else:
                self.keys[layer][slots, :, :length] = k[0].to(self.dtype)
            self.values[layer][slots, :, :length] = v[0].to(self.dtype)

    def move_rows(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        for buf in self.keys + self.values:
            buf[dst] = buf[src]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        return self.lm_head(self.hidden(tokens, positions, kv_len))

    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """The step up to the LM head: the final norm's output [B, hidden] (greedy evaluation applies its own
        head, :mod:`engine.evaluation.greedy_head`)."""
        import torch
        import torch.nn.functional as F

        inf = float("inf")
        b = tokens.shape[0]
        h, kvh, d, g = self.heads, self.kv_heads, self.head_dim, self.group
        half = d // 2
        # attend over the whole cache once most of it is in use: the rows' prefix ``[:b]`` of a buffer is then
        # contiguous and the products read it in place; a slice of the time axis is copied by every product
        t = self.max_len if FULL_LENGTH_FROM * self.max_len <= kv_len else kv_len
        cos = self.cos[positions].unsqueeze(1)  # [B, 1, D]
        sin = self.sin[positions].unsqueeze(1)
        hidden = self.embed.shape[1]
        score_dtype = torch.float32 if self.dtype in (torch.float16, torch.bfloat16) else self.dtype
        hidden_mask = (self._arange[:t].unsqueeze(0) > positions.unsqueeze(1))[:, None, None, :]
        bias = torch.zeros(hidden_mask.shape, dtype=score_dtype, device=self.device).masked_fill_(hidden_mask, -inf)
        # the new token's keys/values go to position ``pos[r]`` of each row: one flat index_copy_ per buffer
        # (computed once per step) instead of an advanced-index write per layer
        v_index = (self._td_base[:b] + positions.view(b, 1) * d).view(-1)
        k_index = (self._dt_base[:b] + positions.view(b, 1)).view(-1) if self.keys_transposed else v_index
        full = t == self.max_len
        x = F.embedding(tokens, self.embed)  # [B, hidden]
        qk_width = (h + kvh) * d
        for layer, (ln1, eps1, qkv_proj, o_proj, ln2, eps2, gate_up_proj, down_proj) in enumerate(self.layers):
            y = F.rms_norm(x, (hidden,), ln1, eps1)
            qkv = qkv_proj(y)  # [B, (H + 2 KV) * D]
            qk = qkv[:, :qk_width].view(b, h + kvh, d)
            rolled = torch.cat([qk[..., half:], qk[..., :half]], dim=-1)
            qk = torch.addcmul(qk * cos, rolled, sin)
            q = qk[:, :h].reshape(b, kvh, g, d)
            keys, values = self.keys[layer], self.values[layer]
            keys.view(-1).index_copy_(0, k_index, qk[:, h:].reshape(-1))
            values.view(-1).index_copy_(0, v_index, qkv[:, qk_width:].reshape(-1))
            if self.keys_transposed:
                scores = torch.matmul(q, keys[:b] if full else keys[:b, :, :, :t])  # [B, KV, G, T]
            else:
                scores = torch.matmul(q, (keys[:b] if full else keys[:b, :, :t]).transpose(-1, -2))
            if scores.dtype == bias.dtype:
                scores += bias
                probs = torch.softmax(scores, dim=-1)
            else:
                probs = torch.softmax(scores.float() + bias, dim=-1).to(self.dtype)
            attn = torch.matmul(probs, values[:b] if full else values[:b, :, :t])  # [B, KV, G, D]
            x = o_proj.add_to(x, attn.reshape(b, h * d))
            y = F.rms_norm(x, (hidden,), ln2, eps2)
            gate_up = gate_up_proj(y)
            inter = gate_up.shape[1] // 2
            act = F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:])
            x = down_proj.add_to(x, act)
        return F.rms_norm(x, (hidden,), self.norm_w, self.norm_eps)


def packed_gemm_available(dtype: torch.dtype, device: torch.device) -> bool:
    """MKL's packed-weight GEMM (what inductor's weight prepacking uses) for fp32 on x86 CPUs."""
    import torch

    if device.type != "cpu" or dtype != torch.float32 or not torch.backends.mkl.is_available():
        return False
    try:
        torch.ops.mkl._mkl_linear  # noqa: B018 - raises where the op is not built in
        torch.ops.mkl._mkl_reorder_linear_weight  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


_PACK_CHECKED: dict[tuple[int, int], bool] = {}


class Linear:
    """``y = x @ W.T + b``. With ``pack``, the weight is packed once into MKL's GEMM layout
    (``cblas_sgemm_pack``) so each call skips re-packing it -- on a CPU at decode batch sizes that repacking
    costs 20-30% of the product (most for the 49k-row LM head). The packed layout does not depend on the
    number of rows; each weight shape is still checked once against ``F.linear`` and left unpacked on any
    mismatch."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, pack: bool = False) -> None:
        import torch

        self.weight, self.bias = weight, bias
        self.packed: torch.Tensor | None = None
        if pack:
            try:
                packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.contiguous(), 256)
            except RuntimeError:
                return
            shape = tuple(weight.shape)
            if shape not in _PACK_CHECKED:
                _PACK_CHECKED[shape] = self._agrees(packed)
            if _PACK_CHECKED[shape]:
                self.packed = packed

    def _agrees(self, packed: torch.Tensor) -> bool:
        import torch
        import torch.nn.functional as F

        gen = torch.Generator().manual_seed(0)
        for rows in (1, 13, 64):
            x = torch.randn(rows, self.weight.shape[1], generator=gen, dtype=self.weight.dtype)
            got = torch.ops.mkl._mkl_linear(x, packed, self.weight, self.bias, rows)
            if not torch.allclose(got, F.linear(x, self.weight, self.bias), rtol=1e-4, atol=1e-4):
                return False
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.packed is not None:
            return torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, x.shape[0])
        return F.linear(x, self.weight, self.bias)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual + x @ W.T`` (one fused GEMM when unpacked)."""
        if self.packed is not None:
            return self(x).add_(residual)
        return residual.addmm(x, self.weight.t())


def _dtype_device(model: Any) -> tuple[torch.dtype, torch.device]:
    param = next(model.parameters())
    return param.dtype, param.device


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def make_decoder(
    model: Any,
    rows: int,
    max_len: int,
    fused: bool | None = None,
    weights: FusedLlamaWeights | None = None,
    pack: bool = True,
) -> HFDecoder | FusedLlamaDecoder:
    """The fused decoder where the architecture allows it (``fused=None``), else the generic one. ``weights``:
    a :class:`FusedLlamaWeights` of this model from an earlier call, reused when its rotary table is long enough
    (and its weights packed if ``pack`` asks for it; packing costs ~1 s for a 135M model and pays off from about
    two thousand sequence-steps)."""
    if fused is None:
        fused = fused_supported(model)
    if fused:
        want_pack = pack and packed_gemm_available(*_dtype_device(model))
        if weights is None or weights.max_len < max_len or (want_pack and not weights.packed):
            weights = FusedLlamaWeights(model, max(max_len, 512), want_pack)
        return FusedLlamaDecoder(weights, rows, max_len)
    return HFDecoder(model, rows, max_len)
