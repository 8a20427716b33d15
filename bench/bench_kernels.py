"""Decode kernels per instruction set: weight-streaming GB/s against PyTorch and the read bandwidth.

A decoding step streams every weight once, so a few-row product should run at the speed of
reading its weights from memory. For the decoder's linear shapes (Qwen3-1.7B: fused up/gate,
down, fused qkv) at 1, 4 and 16 activation rows this prints the weight bytes per second of

* ``linear_bf16`` with fp32 and with bf16 activations, ``linear_int8`` and ``linear_int4``
  (groups of 32, ``jvlm.inference.int4``) with fp32 activations, for every instruction set
  this CPU runs (``--isa`` to pick);
* PyTorch's ``F.linear`` with fp32 weights (fp32 x) and bf16 weights (bf16 x);

next to the machine's read bandwidth (a sum over a tensor far larger than the caches), and
``decode_attention`` against SDPA for one query over 1,800 cached tokens. Each weight is
cycled through enough copies to exceed the last-level cache, so every call reads memory.
Timings are the best of ``--rounds`` (the machine may be shared).

jvlm's weights sit in 2 MiB pages where the OS offers them (``jvlm.memory``, as
``prepare_decoding`` places them), PyTorch's as a plain load leaves them; the read bandwidth
is printed for both page sizes.

    python bench/bench_kernels.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from jvlm import memory
from jvlm.inference import int4, kernels
from jvlm.inference.quantize import quantize_rows

SHAPES = {"up+gate": (2048, 6144 * 2), "down": (6144, 2048), "qkv": (2048, 4096)}  # name: (K, N)
ROWS = (1, 4, 16)
POOL_BYTES = 256 << 20  # copies of a weight add up to at least this (beyond any L3)


def best_seconds(calls, rounds: int) -> float:
    """Best over rounds of the mean time of one call, each round running every call once."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for call in calls:
            call()
        best = min(best, (time.perf_counter() - t0) / len(calls))
    return best


def read_bandwidth(rounds: int, huge: bool = True) -> float:
    """GB/s of a sum over POOL_BYTES, in 2 MiB pages (as jvlm's weights) or in 4 KiB pages."""
    t = torch.ones(POOL_BYTES // 4)
    t = memory.place(t) if huge else t
    return t.numel() * 4 / best_seconds([t.sum], rounds) / 1e9


def copies(make, nbytes: int) -> list:
    return [make() for _ in range(max(1, -(-POOL_BYTES // nbytes)))]


def bench_linear(sets: list, rounds: int) -> None:
    names = [f"{s.name} {what}" for s in sets for what in ("x32", "x16", "int8", "int4")] + ["torch fp32", "torch bf16"]
    print(f"\nlinear layers: GB/s of weights streamed (int8 and int4 count their own bytes), best of {rounds}")
    print(f"{'shape':8} {'M':>3} " + " ".join(f"{n:>17}" for n in names))
    for shape, (k, n) in SHAPES.items():
        torch.manual_seed(0)
        base = torch.randn(n, k) * 0.02
        # jvlm's weights in 2 MiB pages where offered, as prepare_decoding places them
        w16 = copies(lambda: memory.place(base.to(torch.bfloat16)), n * k * 2)
        q, scales = quantize_rows(base)
        w8 = copies(lambda: memory.place(q), n * k)
        packed, gscales = int4.quantize_int4(base)
        int4_bytes = packed.numel() + 2 * gscales.numel()  # 4.5 bits per weight
        w4 = copies(lambda: (memory.place(packed), gscales.clone()), int4_bytes)
        w16_torch = copies(lambda: base.to(torch.bfloat16), n * k * 2)  # PyTorch's: as loaded
        w32 = copies(lambda: base.clone(), n * k * 4)
        for m in ROWS:
            x32 = torch.randn(m, k)
            x16 = x32.to(torch.bfloat16)
            cells = []
            for s in sets:
                for x, ws, nbytes, fn in ((x32, w16, 2, s.linear_bf16), (x16, w16, 2, s.linear_bf16),
                                          (x32, w8, 1, None)):
                    calls = ([lambda w=w: s.linear_int8(x, w, scales) for w in ws] if fn is None
                             else [lambda w=w, x=x, fn=fn: fn(x, w) for w in ws])
                    cells.append(n * k * nbytes / best_seconds(calls, rounds) / 1e9)
                calls = [lambda p=p, g=g: s.linear_int4(x32, p, g, int4.GROUP_SIZE) for p, g in w4]
                cells.append(int4_bytes / best_seconds(calls, rounds) / 1e9)
            cells.append(n * k * 4 / best_seconds([lambda w=w: F.linear(x32, w) for w in w32], rounds) / 1e9)
            cells.append(n * k * 2 / best_seconds([lambda w=w: F.linear(x16, w) for w in w16_torch], rounds) / 1e9)
            print(f"{shape:8} {m:>3} " + " ".join(f"{c:>17.1f}" for c in cells))
        del w16, w8, w4, w32, w16_torch


def bench_attention(sets: list, rounds: int) -> None:
    b, h, kv, d, s = 1, 16, 8, 128, 1800  # Qwen3-1.7B, an image in context
    print(f"\ndecode_attention, B={b} H={h} KV={kv} D={d} S={s}: ms per layer, best of {rounds}")
    for dtype in (torch.bfloat16, torch.float32):
        torch.manual_seed(0)
        cache = torch.randn(2, b, kv, s + 200, d).to(dtype)  # views into a longer cache
        k, v = cache[0, :, :, :s], cache[1, :, :, :s]
        q = torch.randn(b, h, 1, d).to(dtype)
        mask = torch.ones(b, s, dtype=torch.bool)
        row = [f"{str(dtype).removeprefix('torch.'):9}"]
        for ks in sets:
            t = best_seconds([lambda: ks.decode_attention(q[:, :, 0], k, v, mask, d ** -0.5)] * 10, rounds)
            row.append(f"{ks.name} {t * 1e3:6.3f}")
        t = best_seconds([lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None],
                                                                 enable_gqa=True)] * 10, rounds)
        row.append(f"SDPA {t * 1e3:6.3f}")
        print("  ".join(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--isa", action="append", choices=kernels.ISAS,
                   help="instruction set to measure (repeatable; default: every one this CPU runs)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-attention", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sets = [s for s in (kernels.load(isa) for isa in args.isa or kernels.supported_isas()) if s is not None]
    print(f"threads {args.threads}; kernels: {', '.join(s.name for s in sets) or 'none'}")
    print(f"read bandwidth (sum over {POOL_BYTES >> 20} MiB): {read_bandwidth(args.rounds):.1f} GB/s in 2 MiB pages "
          f"({memory.huge_pages()[1]}), {read_bandwidth(args.rounds, huge=False):.1f} GB/s in 4 KiB pages")
    bench_linear(sets, args.rounds)
    if not args.skip_attention:
        bench_attention(sets, args.rounds)
    print(f"read bandwidth again: {read_bandwidth(args.rounds):.1f} GB/s")


if __name__ == "__main__":
    main()
