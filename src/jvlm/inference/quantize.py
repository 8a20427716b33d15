"""Decoder linear layers prepared for decoding on the CPU: real modules swapped in by a converter.

Decoding one token reads every decoder weight once and does two FLOPs per weight, so on a
CPU its speed is set by memory bandwidth, not arithmetic. ``prepare_decoding`` replaces each
``nn.Linear`` of the text decoder (and the LM head) with one of these modules:

* ``StreamedLinear`` -- bf16 weights multiplied by the streaming kernels for the few rows of
  a decode step (fp32 or bf16 activations: on CPUs without native bf16 the model computes
  in fp32 while the weights stay bf16 in memory, half the bytes to read);
* ``Int8Linear`` -- int8 weights, one scale per output row (half the bytes of bf16);
* ``Int4Linear`` -- int4 weights in groups along the input dimension (``jvlm.inference.int4``).

Each module (``DecodeLinear``, ``jvlm.inference.decode_linear``) takes the decode kernels
(``jvlm.inference.kernels``) for products of at most ``MAX_ROWS`` rows and PyTorch's GEMM on
the widened weight for more (prefill: compute-bound, where PyTorch is good), widened one block
of output rows at a time. The vision tower is never touched: it runs once per image and is
compute-bound. ``describe`` says, for reports, which formats and kernels a model runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jvlm import memory
from jvlm.errors import JVLMError
from jvlm.hardware import choose_compute_dtype, cpu_name, dtype_name, simd_summary
from jvlm.inference.decode_linear import DecodeLinear

log = logging.getLogger(__name__)

#: ``--quantize`` choices.
FORMATS = ("int8", "int4")


class QuantizeError(JVLMError, ValueError):
    """A weight format this model or machine cannot run."""


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: (N, K) float -> int8 (N, K) and fp32 scales (N,)."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (N,)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


class StreamedLinear(DecodeLinear):
    """bf16 weights; decode-step products with the streaming kernel."""

    fmt = "bf16"

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype, kernels):
        super().__init__(weight.shape[1], weight.shape[0], compute_dtype, kernels)
        self.register_buffer("weight", memory.place(weight.detach().to(torch.bfloat16).contiguous()))

    def few_rows(self, x2):
        return self.kernels.linear_bf16(x2, self.weight)

    def many_rows(self, x2):
        if self.weight.dtype == x2.dtype:  # nothing to widen
            return F.linear(x2, self.weight)
        return super().many_rows(x2)

    def dense_rows(self, n0, n1):
        return self.weight[n0:n1].to(self.compute_dtype)


class Int8Linear(DecodeLinear):
    """int8 (N, K) weights with fp32 per-row scales."""

    fmt = "int8"

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype, kernels=None):
        super().__init__(weight.shape[1], weight.shape[0], compute_dtype, kernels)
        q, scales = quantize_rows(weight)
        self.register_buffer("qweight", memory.place(q))
        self.register_buffer("scales", scales)

    def few_rows(self, x2):
        if self.kernels is not None:
            return self.kernels.linear_int8(x2, self.qweight, self.scales)
        # PyTorch's own int8 weight-only kernel wants its scales in the activations' dtype
        return torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scales.to(x2.dtype))

    def dense_rows(self, n0, n1):  # level * scale in fp32, rounded once to the compute dtype
        return (self.qweight[n0:n1].float() * self.scales[n0:n1, None]).to(self.compute_dtype)


class Int4Linear(DecodeLinear):
    """Group-wise int4 weights (format: ``jvlm.inference.int4``); needs the decode kernels."""

    fmt = "int4"

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype, kernels):
        from jvlm.inference import int4

        super().__init__(weight.shape[1], weight.shape[0], compute_dtype, kernels)
        self.group_size = int4.GROUP_SIZE
        packed, scales = int4.quantize_int4(weight, self.group_size)
        self.register_buffer("packed", memory.place(packed))
        self.register_buffer("scales", scales)

    def few_rows(self, x2):
        return self.kernels.linear_int4(x2, self.packed, self.scales, self.group_size)

    def dense_rows(self, n0, n1):
        from jvlm.inference import int4

        packed, scales = self.packed[n0:n1], self.scales[n0:n1]
        if self.kernels is not None and self.compute_dtype in (torch.float32, torch.bfloat16):
            return self.kernels.dequantize_int4(packed, scales, self.group_size, self.compute_dtype)
        return int4.dequantize_int4(packed, scales, self.group_size, self.compute_dtype)


@dataclass
class DecodeSetup:
    """The path a model runs, for ``jvlm infer --json``, ``/metrics`` and logs."""

    compute_dtype: str  # "bf16" / "fp32"
    dtype_reason: str  # why that dtype ("--dtype fp32", or the CPU rule of ``jvlm.hardware``)
    weights: str  # "bf16", "fp32", "int8", "int4": the decoder's weight format
    linear_kernel: str  # "avx512-bf16", "avx2-fma", "neon", "pytorch"
    attention: str  # the decoder's attention implementation (``Attention.name``)
    decode_step: str  # who runs a decode step: the fused kernels' name, or "modules" (they decline)
    cpu: str  # the CPU's name and widest vector unit
    huge_pages: str = "no"  # "yes (...)" when the streamed weights and KV cache ask for 2 MiB pages, else "no (why)"

    def as_dict(self) -> dict:
        return asdict(self)


def decoder_linears(model) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every linear layer of the text decoder and the LM head:
    ``nn.Linear`` or, once converted, ``DecodeLinear`` (wrappers such as PEFT's are not listed)."""
    found = []
    for parent in model.model.language_model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, DecodeLinear)):
                found.append((parent, name, child))
    return found + [(model, "lm_head", model.lm_head)]


def describe(model, requested_dtype: str | None = "auto") -> DecodeSetup:
    """The decode path ``model`` runs now, read off its modules; ``requested_dtype`` is what
    the user asked for (``--dtype``), which explains the compute dtype when it is not "auto"."""
    compute = model.compute_dtype
    layers = [child for _, _, child in decoder_linears(model)]
    first = layers[0] if layers else None
    if isinstance(first, DecodeLinear):
        weights, kernel = first.fmt, first.kernel_name
    else:
        weights, kernel = dtype_name(first.weight.dtype) if first is not None else dtype_name(compute), "pytorch"
    rule, rule_reason = choose_compute_dtype(model.stored_dtype or compute, model.device)
    if requested_dtype not in (None, "auto"):
        reason = f"--dtype {requested_dtype}"
    elif rule == compute:
        reason = rule_reason
    else:  # loaded in a dtype of the caller's choosing
        reason = f"set when the model was loaded (this CPU's default would be {dtype_name(rule)})"
    return DecodeSetup(compute_dtype=dtype_name(compute), dtype_reason=reason, weights=weights, linear_kernel=kernel,
                       attention=model.model.language_model.attention.name,
                       decode_step=_step_name(model.model.language_model),
                       cpu=f"{cpu_name()} ({simd_summary()})" if model.device.type == "cpu" else model.device.type,
                       huge_pages=_huge_pages(model, layers))


def _huge_pages(model, layers) -> str:
    if model.device.type != "cpu":
        return "no (not on the CPU)"
    on, why = memory.huge_pages()
    if not on:
        return f"no ({why})"
    if not any(isinstance(layer, DecodeLinear) for layer in layers):
        return "no (the decoder's weights are the loaded tensors; only the KV cache asks for them)"
    return f"yes ({why})"


def _step_name(decoder) -> str:
    """The fused step's name when it runs this decoder's steps, else "modules"."""
    step = decoder.step_kernel
    covers = getattr(step, "covers", None)
    if step is None or (covers is not None and not covers(decoder)):
        return "modules"
    return getattr(step, "name", type(step).__name__)


def prepare_decoding(model, quantize: str | None = None, kernels=None, stored_dtype: torch.dtype | None = None,
                     ) -> DecodeSetup:
    """Swap the decoder's linear layers for decode modules, and its attention, norms and decode
    step for the kernels' (``jvlm.inference.decode_step``).

    ``quantize``: None (keep float weights), "int8" or "int4". ``kernels``: a ``KernelSet``
    (``jvlm.inference.kernels.load()``) or None for PyTorch only. ``stored_dtype``: the dtype
    the checkpoint stores -- when it is bf16 and the model computes in fp32, decoder weights
    go back to bf16 in memory (exactly: they were bf16 to begin with) and the kernels widen
    them as they stream. Safe to call again (layers already converted are left alone).
    """
    from jvlm.inference.kv_attention import KernelAttention

    if quantize is not None and quantize not in FORMATS:
        raise QuantizeError(f"unknown weight format {quantize!r}; choose one of {', '.join(FORMATS)}")
    compute = model.compute_dtype
    device = model.device
    if quantize is not None and device.type not in ("cpu", "mps"):
        raise QuantizeError(f"--quantize {quantize} runs on the CPU; on {device.type} use --dtype bf16")
    if device.type != "cpu":
        kernels = None
    if quantize == "int4" and kernels is None:
        raise QuantizeError("--quantize int4 needs jvlm's CPU decode kernels (x86-64 with AVX2, or ARM64), "
                            "which are not available here; use --quantize int8")
    if quantize == "int4":
        _check_int4_shapes(model)
    stream_bf16 = kernels is not None and quantize is None and (
        compute == torch.bfloat16 or (compute == torch.float32 and stored_dtype == torch.bfloat16))
    if quantize is not None or stream_bf16:
        _untie_head(model)
    saved = 0
    with torch.no_grad():
        linears = decoder_linears(model)
        while linears:  # each old layer is let go as soon as it is replaced: memory peaks one layer over
            parent, name, lin = linears.pop(0)
            if not isinstance(lin, nn.Linear) or lin.bias is not None:
                continue
            w = lin.weight
            if quantize == "int8":
                new = Int8Linear(w, compute, kernels)
            elif quantize == "int4":
                new = Int4Linear(w, compute, kernels)
            elif stream_bf16:
                new = StreamedLinear(w, compute, kernels)
            else:
                continue
            saved += w.numel() * w.element_size() - sum(b.numel() * b.element_size() for b in new.buffers())
            setattr(parent, name, new)
            del lin, w, new
    if kernels is not None:
        from jvlm.inference.decode_step import FusedDecodeStep

        decoder = model.model.language_model
        decoder.set_attention(KernelAttention(kernels))
        decoder.set_norm_kernel(kernels.rms_norm)
        decoder.set_step_kernel(FusedDecodeStep(kernels))
    setup = describe(model, None)
    if saved:
        log.info("decoder weights: %s (%.1f MB less), kernels: %s", setup.weights, saved / 1e6, setup.linear_kernel)
    return setup


def _untie_head(model) -> None:
    """Give the LM head its own copy of a tied table: the embedding itself must stay exact."""
    if getattr(model, "tied", False):
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
        model.tied = False


def _check_int4_shapes(model) -> None:
    from jvlm.inference import int4

    bad = [f"{name} ({lin.in_features} inputs)" for _, name, lin in decoder_linears(model)
           if isinstance(lin, nn.Linear) and lin.in_features % int4.GROUP_SIZE]
    if bad:
        raise QuantizeError(f"--quantize int4 groups {int4.GROUP_SIZE} inputs per scale; these layers do not "
                            f"divide: {', '.join(bad[:3])}")


def load_kernels(choice: str = "auto"):
    """The decode kernels for ``--kernels``: "auto" (the best this CPU runs, or None when it
    runs none or they cannot be built), "torch" (None: PyTorch's kernels only)."""
    if choice == "torch":
        return None
    if choice != "auto":
        raise QuantizeError(f"unknown --kernels {choice!r}; choose auto or torch")
    from jvlm.inference import kernels

    return kernels.load()


def prepare(model, quantize: str = "none", kernels: str = "auto", requested_dtype: str | None = "auto",
            ) -> DecodeSetup:
    """``prepare_decoding`` for the command line and the server: ``quantize`` "none", "int8"
    or "int4"; ``kernels`` "auto" or "torch"; ``requested_dtype`` the ``--dtype`` given."""
    ks = load_kernels(kernels) if model.device.type == "cpu" else None
    prepare_decoding(model, None if quantize == "none" else quantize, ks, stored_dtype=model.stored_dtype)
    return describe(model, requested_dtype)
