"""Placeholder over the AVX-512 extension until the per-ISA build lands."""

from __future__ import annotations

import functools

import torch

MAX_ROWS = 16


class KernelSet:
    isa = "avx512"
    name = "avx512-bf16"

    def __init__(self, ext):
        self._ext = ext

    def linear_bf16(self, x, w, bias=None):
        return self._ext.linear_bf16(x, w, bias)

    def linear_int8(self, x, w, scales, bias=None):
        return self._ext.linear_int8(x, w, scales, bias)

    def decode_attention(self, q, k, v, mask, scale):
        if q.dtype != torch.bfloat16:
            m = None if mask is None else mask[:, None, None, :]
            return torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=m, enable_gqa=True)[:, :, 0]
        return self._ext.decode_attention(q, k, v, mask, scale)


@functools.lru_cache(maxsize=None)
def load(isa=None):
    from jvlm.inference import cpu_kernels

    ext = cpu_kernels.load()
    return KernelSet(ext) if ext is not None else None
