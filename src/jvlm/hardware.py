"""What this machine's CPU can do, and the compute dtype that follows from it.

A leaf module: the loader asks it which dtype to compute in, the kernels ask it which
instruction sets they may use, and reports quote its reasons.

Why the dtype depends on the CPU: PyTorch's bf16 matrix products are fast only where the
CPU multiplies bf16 natively (Intel AMX, AVX-512 BF16 on Intel since Cooper Lake and AMD
since Zen 4, ARM's BF16 extension). Elsewhere they run a slow fallback -- measured on an AVX2-only
AMD EPYC: ~20 GFLOP/s for bf16 against ~150 for fp32 on the decoder's shapes, which made
the first token of a 13-crop photo take 631 s in bf16 and 94 s in fp32. So released bf16
weights are computed in fp32 there (decoder weights can stay bf16 in memory for decoding,
see ``jvlm.inference.quantize``), and in bf16 where the CPU has it.
"""

from __future__ import annotations

import functools
import platform

import torch

#: Flags that make PyTorch's bf16 GEMMs fast (any one of them).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # "bf16": ARM64's feature name
NATIVE_FP16_FLAGS = ("amx_fp16", "avx512_fp16", "fphp")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 "flags", ARM "Features"); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def machine() -> str:
    """``x86_64`` or ``aarch64`` (normalised), or whatever else the platform says."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or machine()


def has_native_bf16() -> bool:
    return any(f in cpu_flags() for f in NATIVE_BF16_FLAGS)


def has_native_fp16() -> bool:
    return any(f in cpu_flags() for f in NATIVE_FP16_FLAGS)


def simd_summary() -> str:
    """A short name of the widest vector unit, for reports: "AVX-512 BF16", "AVX2", "NEON"."""
    f = cpu_flags()
    if machine() == "aarch64":
        return "NEON" + (" BF16" if "bf16" in f else "")
    if "amx_bf16" in f:
        return "AMX-BF16"
    if "avx512_bf16" in f:
        return "AVX-512 BF16"
    if "avx512f" in f:
        return "AVX-512"
    if "avx2" in f:
        return "AVX2"
    return "SSE"


def choose_compute_dtype(stored: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.dtype, str]:
    """The dtype to compute in for weights stored as ``stored`` on ``device``, and why.

    Off the CPU, and for fp32 weights, the stored dtype is kept. On the CPU, bf16 (and fp16)
    weights are computed in that dtype only when the CPU does that arithmetic natively.
    """
    dev = torch.device(device)
    if dev.type != "cpu" or stored == torch.float32:
        return stored, f"the weights' dtype ({dtype_name(stored)})"
    if stored == torch.bfloat16:
        if has_native_bf16():
            return stored, f"the weights' dtype; this CPU has native bf16 ({simd_summary()})"
        return torch.float32, (f"this CPU ({simd_summary()}) has no native bf16, where PyTorch's bf16 matrix "
                               "products are several times slower than fp32")
    if stored == torch.float16:
        if has_native_fp16():
            return stored, f"the weights' dtype; this CPU has native fp16 ({simd_summary()})"
        return torch.float32, f"this CPU ({simd_summary()}) has no native fp16"
    return stored, f"the weights' dtype ({dtype_name(stored)})"


def dtype_name(dtype: torch.dtype) -> str:
    """"bf16", "fp32", "fp16" (the names the command line takes)."""
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype))
