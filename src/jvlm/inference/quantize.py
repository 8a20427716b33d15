"""Weight-only int8 for the decoder: half the bytes of bf16 for every generated token.

Decoding one token reads every decoder weight once and does two FLOPs per weight, so on a
CPU its speed is set by memory bandwidth, not arithmetic. Storing the weights as int8 with
one scale per output row halves the bytes read; activations stay in the compute dtype (no
activation quantization, so prefill quality is untouched by rounding of inputs).

The model code is not changed: each quantized ``nn.Linear`` keeps a ``weight`` attribute,
an ``Int8Weight`` tensor whose ``__torch_function__`` turns ``F.linear(x, weight, bias)``
into an int8 kernel. That covers both ``module(x)`` calls and code that passes
``module.weight`` to ``F.linear`` itself (the fused qkv projection does).

Kernels: few rows (decoding) use PyTorch's ``_weight_int8pack_mm``; many rows (prefill)
dequantize the weight once per call and run a normal matmul, which is compute-bound anyway.
The vision tower is left in the compute dtype: it runs once per image and is compute-bound.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Inputs with at most this many rows take the int8 kernel; larger ones dequantize first.
SMALL_M = 16


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: (N, K) float -> int8 (N, K) and fp32 scales (N,)."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (N,)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8Weight(torch.Tensor):
    """An int8 (N, K) weight with per-row scales that ``F.linear`` knows how to multiply by.

    Any other operation sees a plain int8 tensor, so nothing can silently use it as floats.
    """

    scales: torch.Tensor
    compute_dtype: torch.dtype

    @staticmethod
    def __new__(cls, q: torch.Tensor, scales: torch.Tensor, compute_dtype: torch.dtype):
        t = torch.Tensor._make_subclass(cls, q, False)
        t.scales = scales.to(compute_dtype)
        t.compute_dtype = compute_dtype
        return t

    def dequantize(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).to(self.compute_dtype) * self.scales[:, None]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func is torch._C._nn.linear:
            x, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if isinstance(w, Int8Weight) and not isinstance(x, Int8Weight):
                return _int8_linear(x, w, bias)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _int8_linear(x: torch.Tensor, w: Int8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(w.compute_dtype)  # (M, K)
    q = w.as_subclass(torch.Tensor)
    if x2.shape[0] <= SMALL_M:
        y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), q, w.scales)  # (M, N)
    else:
        y = F.linear(x2, w.dequantize())
    if bias is not None:
        y = y + bias
    return y.reshape(*shape[:-1], q.shape[0]).to(x.dtype)


def quantize_linear_(linear: nn.Linear, compute_dtype: torch.dtype) -> None:
    """Replace ``linear.weight`` by its int8 form, in place."""
    q, scales = quantize_rows(linear.weight)
    del linear._parameters["weight"]
    linear.weight = Int8Weight(q, scales, compute_dtype)  # a plain attribute, not a Parameter


def quantize_decoder_int8(model) -> int:
    """Quantize every linear layer of the text decoder and the LM head; returns bytes saved.

    An LM head tied to the embedding table gets its own int8 copy (the table itself must stay
    exact: it embeds every prompt token).
    """
    compute = model.model.language_model.ln_f.weight.dtype
    device = model.model.language_model.ln_f.weight.device
    if device.type not in ("cpu", "mps"):
        raise ValueError(f"--quantize int8 runs on the CPU (and Apple MPS); on {device.type} use --dtype bf16")
    linears = [m for m in model.model.language_model.modules() if isinstance(m, nn.Linear)]
    head = model.lm_head
    if getattr(model, "tied", False):
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    linears.append(head)
    saved = 0
    with torch.no_grad():
        for lin in linears:
            if isinstance(lin.weight, Int8Weight):
                continue
            before = lin.weight.numel() * lin.weight.element_size()
            quantize_linear_(lin, compute)
            saved += before - lin.weight.numel() - lin.weight.scales.numel() * lin.weight.scales.element_size()
    model.quantization = "int8"
    log.info("int8 decoder: %d linear layers, %.1f MB saved", len(linears), saved / 1e6)
    return saved
