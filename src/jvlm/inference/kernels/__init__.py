"""Decode-step CPU kernels, one build per instruction set, chosen at run time.

Generating a token multiplies a few activation rows by every decoder weight once, so its time
is the time to stream the weights from memory; PyTorch's few-row products stream them at a
fraction of the read bandwidth (and its CPU attention is slow for one query against a long
cache). These kernels read each weight row once for all activation rows (up to ``MAX_ROWS``)
and each cached key/value row once for all query heads of its group:

* ``linear_bf16``: bf16 weights; fp32 activations (bf16 widened to fp32 by a shift, fp32
  multiply-adds) or bf16 activations (on AVX-512 BF16: ``vdpbf16ps``).
* ``linear_int8``: int8 weights with one scale per output row; activations quantized per
  row to int16 (15 bits, finer than bf16's mantissa, so the error is the weights' alone),
  exact int32 sums (``vpdpwssd``, ``vpmaddwd`` or ``smlal``).
* ``linear_int4``: group-wise int4 weights (``jvlm.inference.int4``: 32 weights per fp16
  scale, 4.5 bits per weight); activations rounded to int8 per group of 32, exact integer
  dot products (``vpdpbusd`` on AVX-512 VNNI, ``vpmaddubsw`` on AVX2, ``sdot``/widening
  multiply-adds on ARM64), one fp32 multiply per group.
* ``decode_attention``: one query token against a KV cache view, bf16 or fp32.
* ``rms_norm``, ``add_rms_norm``, ``silu_mul``, ``qk_rope_cache``: the element-wise work of a
  decode step (norms, residual adds, the MLP's gate, the q/k norms and rotary embedding with
  the KV cache write), each in one call where PyTorch spends its time dispatching several tiny
  operations; ``jvlm.inference.decode_step`` runs a whole step with them.

Each output element is summed in the same order whatever the number of rows, so a request
gets bit-identical results alone or in a batch.

Instruction sets (``ISAS``), each its own extension built with its own ``-m`` flags, so any
of them can be built on a machine that runs a better one:

* ``avx512``: AVX-512 F/BW/VL with BF16 and VNNI (Zen 4, Sapphire Rapids and later);
* ``avx2``: AVX2 + FMA + F16C, 256-bit (x86 CPUs since about 2015);
* ``neon``: ARM64 (AArch64 Advanced SIMD). The arithmetic cores (``csrc/*_core.h``) do not
  include torch; ``tests/kernels_neon/check.cpp`` cross-compiles them for aarch64 and checks
  them against a scalar reference under qemu. The torch glue around them (``linear.cpp``,
  ``attention.cpp``, ``step.cpp``, ...) is built only on an ARM64 machine and has not yet been
  run on one.

The C++ sources live in ``csrc/`` and are compiled on first use with the local compiler
(about a minute, cached under ``<jvlm cache>/kernels``, see ``jvlm.paths``); nothing compiles at
import. ``JVLM_KERNELS=avx512|avx2|neon|off`` overrides the choice. A new kernel is one more
source in ``SOURCES`` (exporting its functions with ``JVLM_EXPORT``) and one ``KernelSet``
method.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

import torch

from jvlm.hardware import cpu_flags, machine
from jvlm.paths import cache_dir

log = logging.getLogger(__name__)

ISAS: tuple[str, ...] = ("avx512", "avx2", "neon")
#: Linear kernels take at most this many activation rows (a decode batch); more go to PyTorch.
MAX_ROWS = 16
#: The C++ sources of every build, in ``csrc/``.
SOURCES: tuple[str, ...] = ("module.cpp", "linear.cpp", "attention.cpp", "linear_int4.cpp", "step.cpp")

CSRC = Path(__file__).resolve().parent / "csrc"
_LABELS = {"avx512": "avx512-bf16", "avx2": "avx2-fma", "neon": "neon"}
_CPU_FLAGS = {  # /proc/cpuinfo flags each x86 build needs
    "avx512": ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"),
    "avx2": ("avx2", "fma", "f16c"),
}
#: Compiler flags of each build (also used to build the standalone check of the cores).
BUILD_FLAGS = {
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16",
               "-mavx512vnni", "-DJVLM_ISA_AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DJVLM_ISA_AVX2"],
    "neon": ["-march=armv8-a+simd", "-DJVLM_ISA_NEON"],
}
# Explicit fused multiply-adds only: the compiler must not fuse others, whose rounding would
# then depend on how it scheduled each instantiation.
_COMMON_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]


def supported_isas() -> list[str]:
    """The instruction sets this CPU can run, best first (compiles nothing). x86 is read from
    ``/proc/cpuinfo`` (so other x86 systems get none); every ARM64 CPU has NEON."""
    arch = machine()
    if arch == "aarch64":
        return ["neon"]
    if arch == "x86_64":
        flags = cpu_flags()
        return [isa for isa in ("avx512", "avx2") if all(f in flags for f in _CPU_FLAGS[isa])]
    return []


def default_isa() -> str | None:
    """The best instruction set here, or ``JVLM_KERNELS`` (``off``: None); None when none runs."""
    choice = os.environ.get("JVLM_KERNELS", "").strip().lower()
    supported = supported_isas()
    if choice in ("", "auto"):
        return supported[0] if supported else None
    if choice == "off":
        return None
    if choice not in ISAS:
        raise ValueError(f"JVLM_KERNELS={choice!r} is not one of {', '.join(ISAS)}, off")
    if choice not in supported:
        raise ValueError(f"JVLM_KERNELS={choice}: this CPU cannot run it (it runs: {', '.join(supported) or 'none'})")
    return choice


def label(isa: str) -> str:
    """The name reports give a build ("avx512-bf16", "avx2-fma", "neon")."""
    return _LABELS[isa]


class KernelSet:
    """The compiled kernels of one instruction set (a thin wrapper over the extension)."""

    def __init__(self, isa: str, module) -> None:
        self.isa = isa
        self.name = label(isa)
        self._module = module

    def __repr__(self) -> str:
        return f"KernelSet({self.name})"

    def linear_bf16(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ w.T + bias``: x (M, K) bf16 or fp32, contiguous, M <= MAX_ROWS; w (N, K) bf16;
        bias fp32 (N,) or None. Returns (M, N) in x's dtype."""
        return self._module.linear_bf16(x, w, bias)

    def linear_int8(self, x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ (w * scales[:, None]).T + bias``: w int8 (N, K) with fp32 scales (N,) (symmetric,
        per row); x (M, K) bf16 or fp32, M <= MAX_ROWS. Returns (M, N) in x's dtype."""
        return self._module.linear_int8(x, w, scales, bias)

    def linear_int4(self, x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, group_size: int,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ W.T + bias`` for int4 weights in ``jvlm.inference.int4``'s layout: packed uint8
        (N, K/2), fp16 scales (N, K/group_size), group_size 32; x (M, K) bf16 or fp32,
        M <= MAX_ROWS. Returns (M, N) in x's dtype."""
        return self._module.linear_int4(x, packed, scales, group_size, bias)

    def dequantize_int4(self, packed: torch.Tensor, scales: torch.Tensor, group_size: int,
                        dtype: torch.dtype) -> torch.Tensor:
        """The (N, K) weight of ``jvlm.inference.int4``'s format in ``dtype`` (fp32 or bf16), as
        ``int4.dequantize_int4`` computes it, for prefill's products of many rows."""
        return self._module.dequantize_int4(packed, scales, group_size, dtype)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """``jvlm.model.text.RMSNorm`` over the last dimension in one call: x (..., D) contiguous,
        weight (D,), each bf16 or fp32. Returns x's shape in the promoted dtype."""
        return self._module.rms_norm(x, weight, eps)

    def add_rms_norm(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, rms_norm(s))`` for ``s = x + y`` (a residual add and the norm after it): x, y
        (..., D) and weight (D,), contiguous, one dtype (bf16 or fp32)."""
        s, h = self._module.add_rms_norm(x, y, weight, eps)
        return s, h

    def silu_mul(self, u: torch.Tensor) -> torch.Tensor:
        """``silu(u[..., F:]) * u[..., :F]`` for u (..., 2F) contiguous bf16 or fp32 (the
        decoder MLP's [value | gate] halves), each operation rounded to u's dtype."""
        return self._module.silu_mul(u)

    def qk_rope_cache(self, qkv: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor, v_b: torch.Tensor,
                      q_w: torch.Tensor, k_w: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int, col: int) -> torch.Tensor:
        """The attention inputs of one decode step (``jvlm.model.text.TextAttention``): qkv
        (B, (H + 2 KV) D) plus its biases; q and k through their per-head norms (weights q_w,
        k_w) and the rotary embedding (cos, sin: (B, D)). k and v go to column ``col`` of layer
        ``layer`` of the caches (L, B, KV, capacity, D); q (B, H, D) is returned. One dtype."""
        return self._module.qk_rope_cache(qkv, q_b, k_b, v_b, q_w, k_w, eps, cos, sin, k_cache, v_cache, layer, col)

    def decode_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         scale: float) -> torch.Tensor:
        """``softmax(q k^T * scale) v`` for one query token: q (B, H, D); k, v (B, KV, S, D) with
        stride 1 over D (cache slices); all bf16 or all fp32; mask (B, S) bool (True = attend)
        or None. D in 16, 32, 64, 128; H / KV in 1, 2, 4, 8. Returns (B, H, D) in q's dtype."""
        return self._module.decode_attention(q, k, v, mask, scale)


def load(isa: str | None = None) -> KernelSet | None:
    """The kernels for ``isa`` (``default_isa()`` when None), compiled on first use; None (and
    one log line) when they cannot run here or cannot be built."""
    if isa is None:
        isa = default_isa()
        if isa is None:
            _say_once("no CPU decode kernels here (or JVLM_KERNELS=off); using PyTorch's kernels")
            return None
    elif isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}: expected one of {', '.join(ISAS)}")
    return _build(isa)


@functools.lru_cache(maxsize=None)
def _say_once(message: str) -> None:
    log.info(message)


@functools.lru_cache(maxsize=None)
def _build(isa: str) -> KernelSet | None:
    if isa not in supported_isas():
        log.info("this CPU cannot run the %s decode kernels; using PyTorch's kernels", _LABELS[isa])
        return None
    sources = [str(CSRC / name) for name in SOURCES]
    # The sources' hash is a build flag, so editing a header also rebuilds (PyTorch hashes
    # only the listed sources and flags).
    digest = hashlib.sha256()
    for path in sorted(p for p in CSRC.iterdir() if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    flags = [*_COMMON_FLAGS, *BUILD_FLAGS[isa], f"-DJVLM_SOURCES_SHA={digest.hexdigest()[:16]}"]
    log.info("loading the %s decode kernels (compiled on first use, about a minute)", _LABELS[isa])
    t0 = time.perf_counter()
    try:
        from torch.utils.cpp_extension import load as load_extension

        build_dir = build_directory(isa)
        _clear_stale_lock(build_dir)
        module = load_extension(name=f"jvlm_kernels_{isa}", sources=sources, extra_cflags=flags,
                                extra_ldflags=["-fopenmp"], build_directory=str(build_dir), verbose=False)
    except Exception as e:  # noqa: BLE001 - no compiler, no headers, odd toolchain: PyTorch's kernels
        log.warning("could not build the %s decode kernels (%s); using PyTorch's kernels",
                    _LABELS[isa], str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
    if time.perf_counter() - t0 > 5:
        log.warning("compiled the %s decode kernels in %.0f s (cached for next time)", _LABELS[isa],
                    time.perf_counter() - t0)
    return KernelSet(isa, module)


def build_directory(isa: str) -> Path:
    """Where the ``isa`` build lives: per Python and PyTorch version, as their ABIs differ."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    folder = cache_dir() / "kernels" / f"{isa}-{py}-torch{torch.__version__.split('+')[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: A build takes one or two minutes; a lock older than this was left by a killed build.
STALE_LOCK_S = 15 * 60


def _clear_stale_lock(folder: Path) -> None:
    """PyTorch waits for ever on the lock file of a build that was killed (Ctrl-C, OOM, a
    test timeout); one older than any real build is removed, with a log line."""
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        log.warning("removing a stale kernel build lock (%.0f min old): %s", age / 60, lock)
        lock.unlink(missing_ok=True)
