"""Decode-step attention over the KV cache with the CPU kernels: one ``Attention`` of the
model's attention seam (``jvlm.model.attention``).

PyTorch's CPU ``scaled_dot_product_attention`` is slow for one query against a long cache
(about 6 ms per layer at 1,800 cached tokens on two cores, which for 28 layers costs more
than reading every weight of the decoder). The kernels' ``decode_attention`` reads each
cached key and value once, for all query heads of its group, in about a tenth of that.
Everything else -- prefill, several queries, shapes the kernel does not take -- goes to SDPA.
"""

from __future__ import annotations

import torch

from jvlm.model.attention import SdpaAttention

#: Head sizes and query heads per key/value head the kernels take.
HEAD_DIMS = (16, 32, 64, 128)
GROUPS = (1, 2, 4, 8)


class KernelAttention:
    """One-query attention with ``kernels.decode_attention``, SDPA for the rest."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.name = f"{kernels.name} (decode), sdpa (prefill)"
        self._fallback = SdpaAttention()

    def __call__(self, q, k, v, mask):
        if self._takes(q, k, v, mask):
            m = None if mask is None else mask.reshape(q.shape[0], k.shape[2])  # (B, 1, 1, S) -> (B, S)
            return self.kernels.decode_attention(q[:, :, 0], k, v, m, q.shape[-1] ** -0.5)[:, :, None]
        return self._fallback(q, k, v, mask)

    @staticmethod
    def takes_shapes(n_heads: int, n_kv_heads: int, head_dim: int) -> bool:
        """Whether the kernel takes this many query and key/value heads of this size."""
        return head_dim in HEAD_DIMS and n_heads % n_kv_heads == 0 and n_heads // n_kv_heads in GROUPS

    @staticmethod
    def _takes(q, k, v, mask) -> bool:
        if q.shape[2] != 1 or q.device.type != "cpu" or not (q.dtype == k.dtype == v.dtype):
            return False
        if q.dtype not in (torch.bfloat16, torch.float32):
            return False
        if not KernelAttention.takes_shapes(q.shape[1], k.shape[1], q.shape[-1]):
            return False
        if k.stride(-1) != 1 or v.stride(-1) != 1:
            return False
        return mask is None or (mask.dtype == torch.bool and mask.shape[-2] == 1
                                and mask.numel() == q.shape[0] * k.shape[2])
