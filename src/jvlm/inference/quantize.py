"""Decoder weight formats for decoding on the CPU: int8 weight-only, and bf16 streaming kernels.

Decoding one token reads every decoder weight once and does two FLOPs per weight, so on a
CPU its speed is set by memory bandwidth, not arithmetic. Two levers, both here:

* ``quantize_decoder_int8``: int8 weights with one scale per output row (half the bytes of
  bf16). Activations are not rounded to 8 bits, so only the weights' rounding shows.
* ``use_cpu_kernels``: keep bf16 weights but multiply them with the streaming kernels of
  ``inference.kernels`` for the few-row products of decoding.

The model code is not changed: each affected ``nn.Linear`` gets a ``weight`` that is a tensor
subclass whose ``__torch_function__`` turns ``F.linear(x, weight, bias)`` into the right
kernel. That covers both ``module(x)`` calls and code that passes ``module.weight`` to
``F.linear`` itself (the fused qkv projection does). Products with many rows (prefill) go to
PyTorch's GEMM, which is compute-bound and already good; int8 weights are dequantized for them.
The vision tower is never touched: it runs once per image and is compute-bound.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Products with at most this many rows (a decode batch) take the decode kernels.
SMALL_M = 16


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: (N, K) float -> int8 (N, K) and fp32 scales (N,)."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (N,)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def _kernels():
    from jvlm.inference import kernels

    return kernels.load()


class _LinearWeight(torch.Tensor):
    """Base of the weight subclasses: intercepts ``F.linear``; every other op sees the plain
    stored tensor (int8 for ``Int8Weight``, so nothing can silently use it as floats)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func is torch._C._nn.linear:
            x, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if isinstance(w, _LinearWeight) and not isinstance(x, _LinearWeight):
                shape = x.shape
                y = w.linear(x.reshape(-1, shape[-1]), bias)  # (M, N)
                return y.reshape(*shape[:-1], y.shape[-1])
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    def plain(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


class Int8Weight(_LinearWeight):
    """An int8 (N, K) weight with fp32 per-row scales."""

    @staticmethod
    def __new__(cls, q: torch.Tensor, scales: torch.Tensor, compute_dtype: torch.dtype, ext=None):
        t = torch.Tensor._make_subclass(cls, q, False)
        t.scales = scales.float()
        t.compute_dtype = compute_dtype
        t._scales_c = scales.to(compute_dtype)  # what PyTorch's int8 kernel wants
        t._ext = ext  # inference.kernels, or None for PyTorch's _weight_int8pack_mm
        return t

    def dequantize(self) -> torch.Tensor:
        return self.plain().to(self.compute_dtype) * self._scales_c[:, None]

    def linear(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = x2.to(self.compute_dtype)
        if x2.shape[0] > SMALL_M:
            return F.linear(x2, self.dequantize(), bias)
        if self._ext is not None:
            return self._ext.linear_int8(x2.contiguous(), self.plain(), self.scales,
                                         None if bias is None else bias.float())
        y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), self.plain(), self._scales_c)  # (M, N)
        return y if bias is None else y + bias


class StreamedWeight(_LinearWeight):
    """A bf16 weight whose few-row products use the streaming kernel of ``inference.kernels``."""

    @staticmethod
    def __new__(cls, w: torch.Tensor, ext):
        t = torch.Tensor._make_subclass(cls, w.detach(), False)
        t._ext = ext
        return t

    def linear(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x2.shape[0] > SMALL_M or x2.dtype != torch.bfloat16:
            return F.linear(x2, self.plain(), bias)
        return self._ext.linear_bf16(x2.contiguous(), self.plain(), None if bias is None else bias.float())


def _decoder_linears(model, untie: bool) -> list[nn.Linear]:
    """Every linear layer of the text decoder, plus the LM head (given its own copy of a tied
    table when ``untie``: the embedding itself must stay exact)."""
    linears = [m for m in model.model.language_model.modules() if isinstance(m, nn.Linear)]
    head = model.lm_head
    if untie and getattr(model, "tied", False):
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        model.tied = False
    return linears + [head]


def _set_weight(linear: nn.Linear, weight: torch.Tensor) -> None:
    linear._parameters.pop("weight", None)
    linear.weight = weight  # a plain attribute, not a Parameter: inference only


def use_cpu_kernels(model) -> bool:
    """Route the bf16 decoder's decode-step products through ``inference.kernels``. Returns whether
    it did (False: not a bf16 CPU model, or the kernels cannot be used on this machine)."""
    ln = model.model.language_model.ln_f.weight
    if ln.device.type != "cpu" or ln.dtype != torch.bfloat16:
        return False
    ext = _kernels()
    if ext is None:
        return False
    for lin in _decoder_linears(model, untie=False):
        if not isinstance(lin.weight, _LinearWeight) and lin.weight.is_contiguous():
            _set_weight(lin, StreamedWeight(lin.weight, ext))  # same storage as before
    model.decode_kernels = "bf16-streaming"
    return True


def quantize_decoder_int8(model, own_kernels: bool = True) -> int:
    """Quantize every linear layer of the text decoder and the LM head; returns bytes saved.

    ``own_kernels``: decode with ``inference.kernels`` where the CPU allows, else PyTorch's kernel.
    """
    ln = model.model.language_model.ln_f.weight
    if ln.device.type not in ("cpu", "mps"):
        raise ValueError(f"--quantize int8 runs on the CPU (and Apple MPS); on {ln.device.type} use --dtype bf16")
    ext = _kernels() if own_kernels and ln.device.type == "cpu" else None
    saved = 0
    linears = _decoder_linears(model, untie=True)
    with torch.no_grad():
        for lin in linears:
            w = lin.weight
            if isinstance(w, Int8Weight):
                continue
            plain = w.plain() if isinstance(w, _LinearWeight) else w
            q, scales = quantize_rows(plain)
            _set_weight(lin, Int8Weight(q, scales, ln.dtype, ext))
            saved += plain.numel() * plain.element_size() - q.numel() - scales.numel() * 4
    model.decode_kernels = "int8"
    log.info("int8 decoder: %d linear layers, %.1f MB saved", len(linears), saved / 1e6)
    return saved
