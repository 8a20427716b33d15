"""A decode step of the text decoder in nine kernel calls per layer: the decoder's step seam.

Generating a token multiplies one row per request by every decoder weight, which the linear
kernels do at about the read bandwidth. Around those products, the modules' forward runs some
sixty small PyTorch operations per layer -- the bias add, splits and transposes, the q/k
norms, six operations of rotary embedding, the cache write, residual adds, the MLP's gate --
each costing microseconds of dispatch for nanoseconds of arithmetic: about 5 ms a token over
28 layers on Zen 4, a third of an int4 step. ``FusedDecodeStep`` computes the same layer as

    rms_norm -> qkv linear -> qk_rope_cache (biases, q/k norms, rotary, k/v into the cache)
    -> decode_attention -> out linear -> add_rms_norm -> up linear -> silu_mul -> down linear

with the MLP's residual add fused into the next layer's norm (the last one into ``ln_f``).
The element-wise kernels round where the modules' operations round, so the numbers are the
modules' own up to the order of a norm's sum of squares and the last ulp of exp in SiLU.

It takes only what it was written for and returns None for anything else, which then runs
through the modules: one new token per row, no autograd, a ``KVCache`` (not a Transformers
cache), every linear layer a ``DecodeLinear`` with the kernels, the kernel attention in every
layer, one dtype throughout. ``TextDecoder.set_step_kernel`` installs it (``prepare_decoding``
does); the modules are read afresh at every step, so a layer swapped or wrapped later (a PEFT
adapter) simply sends the step back to the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from jvlm.inference.kv_attention import KernelAttention
from jvlm.inference.decode_linear import MAX_ROWS, DecodeLinear
from jvlm.model.text import KVCache, TextDecoder, build_positions_and_mask, rope_cos_sin

_DTYPES = (torch.bfloat16, torch.float32)


class FusedDecodeStep:
    """``(decoder, embeds, attention_mask, cache) -> final hidden states``, or None to decline."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.name = f"{kernels.name} (fused decode step)"

    def __repr__(self) -> str:
        return f"FusedDecodeStep({self.kernels.name})"

    def __call__(self, decoder: TextDecoder, embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                 cache) -> torch.Tensor | None:
        plan = self.plan(decoder, embeds, cache)
        if plan is None:
            return None
        ks, cfg = self.kernels, decoder.cfg
        b, _, hidden = embeds.shape
        d = cfg.head_dim
        cache.reserve(1)
        past = cache.length
        inputs = build_positions_and_mask(attention_mask, 1, past, b, embeds.device)
        mask = None if inputs.mask is None else inputs.mask.reshape(b, past + 1)
        cos, sin = (t.reshape(b, d) for t in rope_cos_sin(inputs.positions, d, cfg.rope_theta, embeds.dtype))
        keys, values = cache.k[:, :, :, :past + 1], cache.v[:, :, :, :past + 1]
        scale = d ** -0.5
        x = embeds.reshape(b, hidden)
        norm_w, eps = plan[0].attn_norm
        h = ks.rms_norm(x, norm_w, eps)
        for i, L in enumerate(plan):
            q = ks.qk_rope_cache(L.qkv(h), *L.qk, cos, sin, cache.k, cache.v, i, past)
            y = L.out(ks.decode_attention(q, keys[i], values[i], mask, scale).reshape(b, -1))
            x, h = ks.add_rms_norm(x, y, *L.ffn_norm)
            y = L.down(ks.silu_mul(L.up(h)))
            x, h = ks.add_rms_norm(x, y, *L.next_norm)
        cache.advance(1)
        return h.reshape(b, 1, hidden)

    def takes(self, decoder: TextDecoder, embeds: torch.Tensor, cache) -> bool:
        """Whether this step can run here (see the module's docstring)."""
        return self.plan(decoder, embeds, cache) is not None

    def plan(self, decoder: TextDecoder, embeds: torch.Tensor, cache) -> list[_Layer] | None:
        """What each layer's step calls, read off the modules now; None if the step cannot run."""
        dtype = embeds.dtype
        if (torch.is_grad_enabled() or not isinstance(cache, KVCache) or embeds.dim() != 3 or embeds.shape[1] != 1
                or embeds.shape[0] > MAX_ROWS or embeds.device.type != "cpu" or dtype not in _DTYPES
                or cache.k.dtype != dtype or cache.batch != embeds.shape[0] or not embeds.is_contiguous()):
            return None
        return self._layers(decoder, dtype)

    def covers(self, decoder: TextDecoder) -> bool:
        """Whether the decoder's modules are ones this step runs (for reports: ``describe``)."""
        return self._layers(decoder, decoder.ln_f.weight.dtype) is not None

    def _layers(self, decoder: TextDecoder, dtype: torch.dtype) -> list[_Layer] | None:
        cfg = decoder.cfg
        if (dtype not in _DTYPES or cfg.head_dim % 2
                or not KernelAttention.takes_shapes(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
                or not _usable(decoder.ln_f.weight, dtype)):
            return None
        plan = []
        layers = list(decoder.layers)
        for i, layer in enumerate(layers):
            attn, ffn = layer.attn, layer.ffn
            if not isinstance(attn.attention, KernelAttention) or attn.attention.kernels is not self.kernels:
                return None
            linears = (attn.qkv_w, attn.out, ffn.up, ffn.down)
            if not all(isinstance(lin, DecodeLinear) and lin.kernels is not None and lin.compute_dtype == dtype
                       for lin in linears):
                return None
            q_norm, k_norm = attn.q_lnorm, attn.k_lnorm
            tensors = (attn.q_b, attn.k_b, attn.v_b, q_norm.weight, k_norm.weight, layer.attn_lnorm.weight,
                       layer.ffn_lnorm.weight)
            if q_norm.eps != k_norm.eps or not all(_usable(t, dtype) for t in tensors):
                return None
            after = layers[i + 1].attn_lnorm if i + 1 < len(layers) else decoder.ln_f
            plan.append(_Layer(attn_norm=(layer.attn_lnorm.weight, layer.attn_lnorm.eps),
                               qkv=linears[0].few_rows, qk=(*tensors[:5], q_norm.eps), out=linears[1].few_rows,
                               ffn_norm=(layer.ffn_lnorm.weight, layer.ffn_lnorm.eps), up=linears[2].few_rows,
                               down=linears[3].few_rows, next_norm=(after.weight, after.eps)))
        return plan or None


def _usable(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return t.dtype == dtype and t.device.type == "cpu"


@dataclass
class _Layer:
    """One layer's calls and tensors for a step (``FusedDecodeStep.plan``)."""

    attn_norm: tuple  # (weight, eps) of the norm before attention
    qkv: Callable  # few-row products: (M, K) -> (M, N)
    qk: tuple  # q_b, k_b, v_b, q norm weight, k norm weight, eps: qk_rope_cache's arguments
    out: Callable
    ffn_norm: tuple
    up: Callable
    down: Callable
    next_norm: tuple  # the next layer's attention norm, or ln_f after the last layer
