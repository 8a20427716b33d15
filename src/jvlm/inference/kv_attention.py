"""Decode-step attention over the KV cache with the CPU kernel, without touching the model.

PyTorch's CPU ``scaled_dot_product_attention`` is slow for one bf16 query against a long
cache (about 6 ms per layer at 1,800 cached tokens on two cores, which for 28 layers costs
more than reading every weight of the decoder). ``kernels.decode_attention`` reads each
cached key and value once, for all heads of its group, in about a tenth of that.

The model calls ``F.scaled_dot_product_attention(q, k, v, ...)`` with ``k``/``v`` sliced from
the cache, so the cache's storage is made a ``KVTensor``: slices of it stay ``KVTensor``s, and
its ``__torch_function__`` sends one-token attention to the kernel. Anything else (prefill,
fp32, unusual masks) runs PyTorch's own code unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jvlm.model.text import KVCache


class KVTensor(torch.Tensor):
    """Cache storage whose one-query attention uses ``kernels.decode_attention``."""

    _ext = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and cls._ext is not None:
            out = _try_kernel(cls._ext, *args, **kwargs)
            if out is not None:
                return out
            args = tuple(a.as_subclass(torch.Tensor) if isinstance(a, KVTensor) else a for a in args)
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        return super().__torch_function__(func, types, args, kwargs)


def _try_kernel(ext, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """(B, H, 1, D) output from the kernel, or None when the call is not one it handles."""
    b, h, t, d = q.shape
    if t != 1 or dropout_p or q.dtype != torch.bfloat16 or k.dtype != torch.bfloat16 or q.device.type != "cpu":
        return None
    if d not in (16, 32, 64, 128) or h % k.shape[1] or h // k.shape[1] not in (1, 2, 4):
        return None
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        return None
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool or attn_mask.shape[-2] != 1 or attn_mask.numel() != b * k.shape[2]:
            return None
        mask = attn_mask.reshape(b, k.shape[2])  # (B, 1, 1, S) -> (B, S)
    plain = [x.as_subclass(torch.Tensor) for x in (q, k, v)]
    out = ext.decode_attention(plain[0][:, :, 0], plain[1], plain[2], mask, scale or d ** -0.5)  # (B, H, D)
    return out[:, :, None]


def use_kernel_attention(cache: KVCache, ext) -> KVCache:
    """Make ``cache`` route one-token attention to ``ext`` (in place; returns it)."""
    KVTensor._ext = ext
    if not isinstance(cache.k, KVTensor):
        cache.k = cache.k.as_subclass(KVTensor)
        cache.v = cache.v.as_subclass(KVTensor)
    return cache
