"""The attention seam of the decoder: the one call every text layer makes to mix its tokens.

``TextAttention`` computes q, k, v, writes k and v into the cache, and hands all four to
``decoder.attention`` -- an ``Attention`` object chosen per model. Two ship here:

* ``SdpaAttention`` ("sdpa"): PyTorch's fused ``scaled_dot_product_attention``;
* ``EagerAttention`` ("eager"): the softmax written out (attention maps, debugging).

Inference adds a third, backed by its CPU decode kernels (``jvlm.inference.kv_attention``):
it takes the one-query decode step and passes everything else (prefill, masks it does not
handle) to SDPA. The choice is made with ``TextDecoder.set_attention`` and can be read back
from ``decoder.attention.name``, so the kernel that runs is visible, never injected.

Shapes: q (B, H, T, D); k, v (B, KV, S, D) with S = cached + T (grouped-query: H a multiple
of KV); ``mask`` (B, 1, T, S) bool (True = attend) or None for the plain causal case, where
the T queries are the last T of the S keys.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class Attention(Protocol):
    """softmax(q k^T / sqrt(D) + mask) v for one layer, returned as (B, H, T, D)."""

    name: str

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor: ...


def causal_mask(t: int, past: int, device) -> torch.Tensor:
    """(T, past + T) bool: query i sees keys 0 .. past + i."""
    return torch.ones(t, past + t, dtype=torch.bool, device=device).tril(diagonal=past)


class SdpaAttention:
    name = "sdpa"

    def __call__(self, q, k, v, mask):
        gqa = q.shape[1] != k.shape[1]
        if mask is None:
            t, s = q.shape[2], k.shape[2]
            if t > 1 and t != s:  # queries after a cached prefix: causal from the end
                mask = causal_mask(t, s - t, q.device)[None, None]
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
            return F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class EagerAttention:
    name = "eager"

    def __call__(self, q, k, v, mask):
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        t, s = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if mask is None:
            mask = causal_mask(t, s - t, q.device)[None, None]
        scores = scores.float().masked_fill(~mask, float("-inf"))
        return scores.softmax(-1).to(v.dtype) @ v


#: The implementations selectable by name (``attn_implementation`` in Transformers' terms).
BUILTIN: dict[str, type] = {"sdpa": SdpaAttention, "eager": EagerAttention}


def attention_by_name(name: str) -> Attention:
    try:
        return BUILTIN[name]()
    except KeyError:
        raise ValueError(f"attention implementation {name!r} is not one of {', '.join(map(repr, BUILTIN))}") from None
