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

import torch

from jvlm.inference.kv_attention import KernelAttention
from jvlm.inference.quantize import MAX_ROWS, DecodeLinear
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
        if not self.takes(decoder, embeds, cache):
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
        layers = decoder.layers
        x = embeds.reshape(b, hidden)
        h = ks.rms_norm(x, layers[0].attn_lnorm.weight, layers[0].attn_lnorm.eps)
        for i, layer in enumerate(layers):
            attn, ffn = layer.attn, layer.ffn
            q = ks.qk_rope_cache(attn.qkv_w.few_rows(h), attn.q_b, attn.k_b, attn.v_b, attn.q_lnorm.weight,
                                 attn.k_lnorm.weight, attn.q_lnorm.eps, cos, sin, cache.k, cache.v, i, past)
            y = attn.out.few_rows(ks.decode_attention(q, keys[i], values[i], mask, scale).reshape(b, -1))
            x, h = ks.add_rms_norm(x, y, layer.ffn_lnorm.weight, layer.ffn_lnorm.eps)
            y = ffn.down.few_rows(ks.silu_mul(ffn.up.few_rows(h)))
            norm = layers[i + 1].attn_lnorm if i + 1 < len(layers) else decoder.ln_f
            x, h = ks.add_rms_norm(x, y, norm.weight, norm.eps)
        cache.advance(1)
        return h.reshape(b, 1, hidden)

    def takes(self, decoder: TextDecoder, embeds: torch.Tensor, cache) -> bool:
        """Whether this step can run here (see the module's docstring)."""
        dtype = embeds.dtype
        if (torch.is_grad_enabled() or not isinstance(cache, KVCache) or embeds.dim() != 3 or embeds.shape[1] != 1
                or embeds.shape[0] > MAX_ROWS or embeds.device.type != "cpu" or dtype not in _DTYPES
                or cache.k.dtype != dtype or cache.batch != embeds.shape[0] or not embeds.is_contiguous()):
            return False
        cfg = decoder.cfg
        if cfg.head_dim % 2 or cfg.n_heads % cfg.n_kv_heads:
            return False
        if decoder.ln_f.weight.dtype != dtype:
            return False
        for layer in decoder.layers:
            attn, ffn = layer.attn, layer.ffn
            if not isinstance(attn.attention, KernelAttention) or attn.attention.kernels is not self.kernels:
                return False
            for lin in (attn.qkv_w, attn.out, ffn.up, ffn.down):
                if not isinstance(lin, DecodeLinear) or lin.kernels is None or lin.compute_dtype != dtype:
                    return False
            if attn.q_lnorm.eps != attn.k_lnorm.eps:
                return False
            for p in (attn.q_b, attn.k_b, attn.v_b, attn.q_lnorm.weight, attn.k_lnorm.weight,
                      layer.attn_lnorm.weight, layer.ffn_lnorm.weight):
                if p.dtype != dtype or p.device.type != "cpu":
                    return False
        return KernelAttention.takes_shapes(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
