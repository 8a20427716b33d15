"""The base of the decoder's decode-format linear layers (``jvlm.inference.quantize``).

A leaf of its own so that both the formats (``quantize``) and the fused decode step
(``decode_step``), which calls their few-row products directly, can name it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jvlm.hardware import dtype_name

#: Products with at most this many rows (a decode batch) take the decode kernels.
MAX_ROWS = 16
#: Products of more rows (prefill) widen a quantized weight to floats this many bytes at a
#: time: no float copy of a whole weight is made (one of the MLP's, 50 MB in bf16, cost more
#: in allocation and page faults than its GEMM for a short prompt), and each block is still in
#: cache when the GEMM reads it.
DENSE_BLOCK_BYTES = 2 * 2**20


class DecodeLinear(nn.Module):
    """Base: ``y = x @ W.T`` for a bias-free decoder projection held in a decode format."""

    fmt = "float"

    def __init__(self, in_features: int, out_features: int, compute_dtype: torch.dtype, kernels=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.kernels = kernels  # a KernelSet, or None: PyTorch only

    @property
    def kernel_name(self) -> str:
        return self.kernels.name if self.kernels is not None else "pytorch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype)
        if x2.shape[0] <= MAX_ROWS:
            y = self.few_rows(x2.contiguous())
        else:
            y = self.many_rows(x2)
        return y.reshape(*shape[:-1], self.out_features)

    def few_rows(self, x2: torch.Tensor) -> torch.Tensor:  # (M, K) -> (M, N), M <= MAX_ROWS
        raise NotImplementedError

    def many_rows(self, x2: torch.Tensor) -> torch.Tensor:
        """(M, K) -> (M, N) with PyTorch's GEMM, the weight widened a block of rows at a time."""
        rows = max(16, DENSE_BLOCK_BYTES // (self.in_features * x2.element_size()))
        if rows >= self.out_features:
            return F.linear(x2, self.dense_rows(0, self.out_features))
        return torch.cat([F.linear(x2, self.dense_rows(n, min(n + rows, self.out_features)))
                          for n in range(0, self.out_features, rows)], dim=-1)

    def dense_rows(self, n0: int, n1: int) -> torch.Tensor:  # (n1 - n0, K) in the compute dtype
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        """The whole (N, K) weight in the compute dtype."""
        return self.dense_rows(0, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"compute={dtype_name(self.compute_dtype)}, kernels={self.kernel_name}")
