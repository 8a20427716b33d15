"""The Qwen3 decoder of Jina-VLM over input embeddings, with an explicit KV cache.

Names mirror the official checkpoint (``embedding.embedding`` / ``embedding.new_embedding``,
``layers.L.attn.qkv_w`` + ``q_b/k_b/v_b``, ``q_lnorm``/``k_lnorm``, ``ffn.up/down``,
``attn_lnorm``/``ffn_lnorm``, ``ln_f``). Differences from Hugging Face's Qwen3 are only in
naming: fused qkv and [value | gate] MLP halves, plus q/k/v biases that the official code
always adds (spec, Corrections 1) — zero in a Qwen3 initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jvlm import memory
from jvlm.config import TextConfig
from jvlm.model.attention import Attention, SdpaAttention, attention_by_name, causal_mask


#: Rows up to which an RMSNorm with a ``kernel`` hands its input to it (a decode step's).
NORM_KERNEL_ROWS = 256
_KERNEL_DTYPES = (torch.bfloat16, torch.float32)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled (Qwen3 order).

    ``kernel``: the norm seam, None or a function ``(x, weight, eps) -> y`` computing the same
    in one call (``TextDecoder.set_norm_kernel``; the CPU decode kernels provide one). It takes
    bf16/fp32 CPU inference inputs of at most ``NORM_KERNEL_ROWS`` rows; autograd, other dtypes
    and devices, and larger inputs stay here.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.kernel = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.kernel is not None and x.numel() <= NORM_KERNEL_ROWS * x.shape[-1] and x.device.type == "cpu"
                and x.dtype in _KERNEL_DTYPES and self.weight.dtype in _KERNEL_DTYPES
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return self.kernel(x.contiguous(), self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class ExtendedEmbedding(nn.Module):
    """Base table plus ``additional_vocab_size`` new rows; id v >= base reads new_embedding[v - base]."""

    def __init__(self, base_rows: int, extra_rows: int, dim: int):
        super().__init__()
        self.base_rows = base_rows
        self.embedding = nn.Parameter(torch.zeros(base_rows, dim))
        self.new_embedding = nn.Parameter(torch.zeros(extra_rows, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.clamp_min(0)  # -1 (padding) reads row 0; it is masked out anyway
        is_new = ids >= self.base_rows
        out = F.embedding(ids.clamp_max(self.base_rows - 1), self.embedding)
        if bool(is_new.any()):
            new = F.embedding((ids - self.base_rows).clamp_min(0), self.new_embedding)
            out = torch.where(is_new[..., None], new, out)
        return out


class ExternalCache:
    """A Transformers ``Cache`` (``DynamicCache`` and friends) behind ``KVCache``'s interface.

    Transformers' ``generate`` owns that cache (it grows it, reorders it for beam search,
    crops it for assisted decoding); the decoder only writes each layer's new keys/values
    through ``update`` and reads back the whole history.
    """

    def __init__(self, cache):
        self.cache = cache
        self.length = int(cache.get_seq_length())

    def reserve(self, extra: int) -> None:  # the Transformers cache grows itself
        pass

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(k, v, layer)

    def advance(self, t: int) -> None:
        self.length += t


class KVCache:
    """Preallocated keys/values for every layer: (layers, B, kv_heads, capacity, head_dim).

    ``length`` tokens are filled. It grows by doubling when a step would overflow, and rows
    can be selected (a request leaving a batch) without copying the others' history twice.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (n_layers, batch, n_kv_heads, max(capacity, 1), head_dim)
        # every decode step reads the filled part: 2 MiB pages where available (jvlm.memory)
        self.k = memory.zeros(shape, dtype, device)
        self.v = memory.zeros(shape, dtype, device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need <= self.capacity:
            return
        new_cap = max(need, 2 * self.capacity)
        for name in ("k", "v"):
            old = getattr(self, name)
            grown = memory.zeros(old.shape[:3] + (new_cap, old.shape[4]), old.dtype, old.device)
            grown[:, :, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, grown)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, KV, T, D) at the end of ``layer`` and return every key/value so far."""
        t = k.shape[2]
        end = self.length + t
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        self.length += t

    def select(self, rows: torch.Tensor | list[int]) -> None:
        """Keep only these batch rows (in this order)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.k.device)
        self.k, self.v = (torch.index_select(t, 1, idx, out=memory.zeros((t.shape[0], len(idx), *t.shape[2:]),
                                                                          t.dtype, t.device))
                          for t in (self.k, self.v))

    def drop_front(self, n: int) -> None:
        """Forget the first ``n`` columns (keys no remaining row attends to)."""
        self.k, self.v = self.k[:, :, :, n:], self.v[:, :, :, n:]
        self.length -= n

    def span(self, row: int, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of columns ``start .. start + n`` of one row: (L, 1, KV, n, D) keys, values."""
        cols = slice(start, start + n)
        return self.k[:, row:row + 1, :, cols].clone(), self.v[:, row:row + 1, :, cols].clone()

    def fill(self, k: torch.Tensor, v: torch.Tensor, rows: slice = slice(None), end: int | None = None) -> None:
        """Place (L, b, KV, n, D) keys/values in ``rows`` so that they end at column ``end``
        (default: their own length, from column 0); the cache's length becomes at least ``end``."""
        n = k.shape[3]
        end = n if end is None else end
        if end > self.capacity:
            raise ValueError(f"cache of {self.capacity} columns cannot hold keys up to column {end}")
        self.k[:, rows, :, end - n:end] = k
        self.v[:, rows, :, end - n:end] = v
        self.length = max(self.length, end)

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of every filled column: (L, B, KV, length, D) keys, values."""
        return self.k[:, :, :, :self.length], self.v[:, :, :, :self.length]


def linear_plus_bias(layer: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``layer(x) + bias`` for a bias-free projection whose bias is kept apart (official
    layout). A plain ``nn.Linear`` takes the fused ``F.linear``; a wrapped one (a LoRA layer
    from PEFT, a quantized layer) is called as a module so that its own forward runs."""
    if type(layer) is nn.Linear:
        return F.linear(x, layer.weight, bias)
    return layer(x) + bias


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """(B, T) integer positions -> cos, sin of shape (B, 1, T, head_dim) (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class TextAttention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.qkv_w = nn.Linear(cfg.hidden_size, q_dim + 2 * kv_dim, bias=False)
        # Always added by the official forward, whatever the config's bias flags say.
        self.q_b = nn.Parameter(torch.zeros(q_dim))
        self.k_b = nn.Parameter(torch.zeros(kv_dim))
        self.v_b = nn.Parameter(torch.zeros(kv_dim))
        self.out = nn.Linear(q_dim, cfg.hidden_size, bias=False)
        # differs from the ViT: per-head RMSNorm on q and k, before RoPE (Qwen3)
        self.q_lnorm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)
        self.k_lnorm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)
        # The attention seam (``jvlm.model.attention``): set for every layer by the decoder.
        self.attention: Attention = SdpaAttention()

    @property
    def attn_implementation(self) -> str:
        """The attention's name (Transformers' term)."""
        return self.attention.name

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, _ = x.shape
        h, kvh, d = self.n_heads, self.n_kv, self.head_dim
        qkv = linear_plus_bias(self.qkv_w, x, torch.cat([self.q_b, self.k_b, self.v_b]))
        q, k, v = qkv.split([h * d, kvh * d, kvh * d], dim=-1)
        q = self.q_lnorm(q.view(b, t, h, d)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_lnorm(k.view(b, t, kvh, d)).transpose(1, 2)  # (B, KV, T, D)
        v = v.view(b, t, kvh, d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)  # (B, KV, S, D)
        y = self.attention(q, k, v, mask)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))


class TextMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.size = cfg.mlp_size
        self.up = nn.Linear(cfg.hidden_size, 2 * cfg.mlp_size, bias=False)
        self.down = nn.Linear(cfg.mlp_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up(x)
        return self.down(F.silu(u[..., self.size :]) * u[..., : self.size])  # [value | gate]


class TextBlock(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.attn_lnorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = TextAttention(cfg)
        self.ffn_lnorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn = TextMLP(cfg)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.attn(self.attn_lnorm(x), cos, sin, mask, cache, layer)
        return x + self.ffn(self.ffn_lnorm(x))


@dataclass
class DecoderInputs:
    positions: torch.Tensor  # (B, T)
    mask: torch.Tensor | None  # (B, 1, T, S) bool, or None for the plain causal case


def build_positions_and_mask(attention_mask: torch.Tensor | None, t: int, past: int, batch: int,
                             device) -> DecoderInputs:
    """Positions from cumsum(attention_mask) - 1 (left padding safe) and the attention mask.

    ``attention_mask`` covers past + current tokens: (B, past + t). None means all ones.
    """
    if attention_mask is None:
        pos = torch.arange(past, past + t, device=device).expand(batch, t)
        if past == 0:
            return DecoderInputs(pos, None)
        return DecoderInputs(pos, None if t == 1 else causal_mask(t, past, device)[None, None].expand(batch, 1, t, past + t))
    am = attention_mask.to(device=device, dtype=torch.long)
    pos = (am.cumsum(-1) - 1).clamp_min(0)[:, -t:]
    keys = am.bool()[:, None, None, :]  # (B, 1, 1, S)
    mask = keys & causal_mask(t, past, device)[None, None]  # (B, 1, T, S)
    # A left-padding query row would see no key at all (NaN in softmax): let it see itself.
    own = torch.zeros_like(mask)
    own[..., torch.arange(t, device=device), past + torch.arange(t, device=device)] = True
    mask = mask | (own & ~mask.any(-1, keepdim=True))
    return DecoderInputs(pos, mask)


class TextDecoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = ExtendedEmbedding(cfg.base_rows, cfg.additional_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(TextBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        # The step seam: None, or a function running a whole one-token step (set_step_kernel).
        self.step_kernel = None

    @property
    def attention(self) -> Attention:
        return self.layers[0].attn.attention

    def set_attention(self, attention: Attention) -> None:
        """Use ``attention`` (``jvlm.model.attention``) in every layer."""
        for layer in self.layers:
            layer.attn.attention = attention

    def set_norm_kernel(self, kernel) -> None:
        """Give every RMSNorm of the decoder (``RMSNorm.kernel``) a one-call implementation for
        decode steps, or None for PyTorch's operations."""
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.kernel = kernel

    def set_step_kernel(self, step) -> None:
        """Hand one-token steps with a cache to ``step(decoder, embeds, attention_mask, cache)``,
        which computes the whole step (the final hidden states, after ``ln_f``) and advances the
        cache, or returns None to leave it to the modules; None removes it. The CPU decode
        kernels provide one (``jvlm.inference.decode_step``)."""
        self.step_kernel = step

    def set_attn_implementation(self, name: str) -> None:
        """"sdpa" or "eager" for every layer (the same numbers up to rounding)."""
        self.set_attention(attention_by_name(name))

    def new_cache(self, batch: int, capacity: int, dtype=None, device=None) -> KVCache:
        p = self.ln_f.weight
        return KVCache(self.cfg.n_layers, batch, self.cfg.n_kv_heads, self.cfg.head_dim, capacity,
                       dtype or p.dtype, device or p.device)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | ExternalCache | None = None) -> torch.Tensor:
        """(B, T, hidden) input embeddings -> (B, T, hidden) final hidden states (after ln_f)."""
        b, t, _ = embeds.shape
        if self.step_kernel is not None and cache is not None and t == 1:
            hidden = self.step_kernel(self, embeds, attention_mask, cache)
            if hidden is not None:
                return hidden
        past = cache.length if cache is not None else 0
        if cache is not None:
            cache.reserve(t)
        di = build_positions_and_mask(attention_mask, t, past, b, embeds.device)
        cos, sin = rope_cos_sin(di.positions, self.cfg.head_dim, self.cfg.rope_theta, embeds.dtype)
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, di.mask, cache, i)
        if cache is not None:
            cache.advance(t)
        return self.ln_f(x)
