"""int4 decoder weights: rounding error per layer, and the decode kernel's speed.

    PYTHONPATH=src python bench/bench_int4.py --threads 2

(a) Relative output error ||y - y_fp32|| / ||y_fp32|| of one linear layer at the decoder's
shapes for bf16, int8 per row, and int4 (this format; its plain-maximum scale; and an
asymmetric scale + minimum variant with groups of 32 and 64, for comparison), on N(0, 0.02)
weights with a few outlier columns (also plain Gaussian and Student-t) and Gaussian
activations.

(b) The decode kernel's time and weight-read rate (packed + scales) per instruction-set
build at M = 1 and 4 activation rows, against the machine's read bandwidth (a large
``torch.sum``). Enough copies of each weight are cycled to exceed the last-level cache, as a
decoder's layers do. Best of several runs; on a shared machine the numbers move with the load.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from jvlm.inference import kernels as kernel_builds
from jvlm.inference.int4 import dequantize_int4, linear_int4_reference, quantize_int4
from jvlm.inference.quantize import quantize_rows

from bench_inference import best_time  # beside this script

SHAPES = ((2048, 6144), (6144, 2048))  # (K, N): the MLP's up/gate and down projections
#: Bytes of weights cycled per timing pass: beyond the last-level cache (32 MB per CCD here).
CYCLED_BYTES = 192 << 20


def weights(k: int, n: int, kind: str = "outliers", seed: int = 0) -> torch.Tensor:
    """(n, k) weights, std 0.02: "outliers" N(0, 0.02) with 8 input columns 10x larger,
    "gaussian" plain N(0, 0.02), "student-t" heavy-tailed (5 degrees of freedom)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "student-t":
        normal, chi2 = torch.randn(n, k, generator=g), torch.randn(n, k, 5, generator=g).square().sum(-1)
        return normal / (chi2 / 5).sqrt() * 0.02
    w = torch.randn(n, k, generator=g) * 0.02
    if kind == "outliers":
        w[:, torch.randperm(k, generator=g)[:8]] *= 10
    return w


def asymmetric_int4(w: torch.Tensor, group: int = 32) -> torch.Tensor:
    """Scale and minimum per group (fp16 each: 5.0 bits/weight), levels 0..15; dequantized."""
    g = w.reshape(w.shape[0], -1, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    s = ((hi - lo) / 15).half().float()
    lo = lo.half().float()
    q = ((g - lo) / torch.where(s == 0, 1.0, s)).round().clamp(0, 15)
    return (q * s + lo).reshape(w.shape)


def plain_max_int4(w: torch.Tensor, group: int = 32) -> torch.Tensor:
    """This format's symmetric levels with the plain scale (largest weight at level -8); dequantized."""
    g = w.reshape(w.shape[0], -1, group)
    s = (g.gather(-1, g.abs().argmax(-1, keepdim=True)) / -8).half().float()
    return ((g / torch.where(s == 0, 1.0, s)).round().clamp(-8, 7) * s).reshape(w.shape)


def quality(kernel) -> None:
    print("(a) relative output error per layer, x ~ N(0, 1) (16 rows); int4 ref: exact activations,"
          " int4 kern: the kernel's int8 activations")
    print(f"{'K x N':>12} {'weights':>9} {'bf16':>7} {'int8/row':>8} {'int4 ref':>8} {'int4 kern':>9}"
          f" {'max-scale':>9} {'asym32':>7} {'asym64':>7}")
    print(f"{'bits/weight':>22} {16:>7} {'8.0':>8} {4.5:>8} {4.5:>9} {4.5:>9} {5.0:>7} {4.5:>7}")
    for (k, n), kind in ((SHAPES[0], "outliers"), (SHAPES[1], "outliers"), (SHAPES[0], "gaussian"),
                         (SHAPES[0], "student-t")):
        w = weights(k, n, kind)
        x = torch.randn(16, k, generator=torch.Generator().manual_seed(1))
        exact = x @ w.t()
        rel = lambda y: float((y - exact).norm() / exact.norm())  # noqa: E731
        q8, s8 = quantize_rows(w)
        packed, scales = quantize_int4(w)
        cols = [rel(x @ w.bfloat16().float().t()), rel(x @ (q8.float() * s8[:, None]).t()),
                rel(linear_int4_reference(x, packed, scales)), rel(kernel.linear_int4(x, packed, scales, 32, None)),
                rel(x @ plain_max_int4(w).t()), rel(x @ asymmetric_int4(w, 32).t()), rel(x @ asymmetric_int4(w, 64).t())]
        widths = (7, 8, 8, 9, 9, 7, 7)
        print(f"{k:>5} x {n:<5} {kind:>9}" + "".join(f" {c:>{wd}.4f}" for c, wd in zip(cols, widths)))


def call_times(fn, args: list, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of single calls ``fn(*a)`` cycling through ``args`` (each copy
    cold in cache when its turn comes), ``repeats`` passes."""
    for a in args[:2]:
        fn(*a)
    times = []
    for _ in range(repeats):
        for a in args:
            t0 = time.perf_counter()
            fn(*a)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2]


def read_bandwidth(nbytes: int, repeats: int) -> tuple[float, float]:
    """GB/s of ``torch.sum``: (one sum over 1 GiB of fp32, best of ``repeats``; best single sum
    over ``nbytes`` chunks cycled through CYCLED_BYTES, the kernel's own access pattern)."""
    big = torch.ones(1 << 28)
    whole = big.numel() * 4 / best_time(lambda: big.sum(), repeat=repeats) / 1e9
    del big
    chunks = [(torch.ones(nbytes // 4),) for _ in range(max(2, CYCLED_BYTES // nbytes))]
    best, _ = call_times(lambda t: t.sum(), chunks, repeats)
    return whole, nbytes / best / 1e9


def speed(kernels: dict, repeats: int) -> None:
    print(f"(b) decode kernel, {torch.get_num_threads()} threads; best single call (median in brackets);"
          " % bw: of the higher of the two read bandwidths")
    for k, n in SHAPES:
        packed, scales = quantize_int4(weights(k, n))
        nbytes = packed.numel() + scales.numel() * 2
        whole, chunked = read_bandwidth(nbytes, repeats)
        bandwidth = max(whole, chunked)
        print(f"read bandwidth (torch.sum): {whole:.1f} GB/s over 1 GiB, {chunked:.1f} GB/s over {nbytes / 1e6:.1f} MB chunks")
        print(f"{'build':>10} {'K x N':>12} {'M':>2} {'ms':>7} {'GB/s':>6} {'% bw':>5} {'vs M=1':>6}  {'(median ms)':>11}")
        copies = [(packed.clone(), scales.clone()) for _ in range(max(2, CYCLED_BYTES // nbytes))]
        best1 = {}
        for name, ext in kernels.items():
            for m in (1, 4):
                x = torch.randn(m, k).bfloat16()
                t, med = call_times(lambda p, s: ext.linear_int4(x, p, s, 32, None), copies, repeats)
                best1.setdefault(name, t)
                gbs = nbytes / t / 1e9
                print(f"{name:>10} {k:>5} x {n:<5} {m:>2} {t * 1e3:>7.3f} {gbs:>6.1f} {100 * gbs / bandwidth:>5.0f}"
                      f" {t / best1[name]:>6.2f}  ({med * 1e3:>8.3f})")
        wbf = [(weights(k, n).bfloat16(),) for _ in range(max(2, CYCLED_BYTES // (2 * k * n)))]
        for m in (1, 4):  # PyTorch's bf16 product, for scale (3.6x the bytes)
            x = torch.randn(m, k).bfloat16()
            t, med = call_times(lambda wb: F.linear(x, wb), wbf, repeats)
            gbs = 2 * k * n / t / 1e9
            print(f"{'torch bf16':>10} {k:>5} x {n:<5} {m:>2} {t * 1e3:>7.3f} {gbs:>6.1f} {100 * gbs / bandwidth:>5.0f}"
                  f" {'':>6}  ({med * 1e3:>8.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="timing runs; the best is reported")
    ap.add_argument("--isa", nargs="+", default=["avx512", "avx2"], help="kernel builds to time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernels = {isa: kernel_builds.load(isa) for isa in args.isa}
    quality(next(iter(kernels.values())))
    speed(kernels, args.repeats)


if __name__ == "__main__":
    main()
