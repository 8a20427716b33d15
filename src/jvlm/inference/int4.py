"""Group-wise int4 weights for the decoder: the storage format, its quantizer and references.

Decoding reads every decoder weight once per token, so on a CPU the token rate follows the
bytes per weight. int4 halves int8's bytes; a scale per small group of weights keeps the
rounding local, so one large weight only coarsens its own 32 neighbours.

**Format** (symmetric, group size 32 by default, 4.5 bits per weight):

* ``scales``: float16 ``(N, K // group_size)``, one per group of ``group_size`` consecutive
  weights of a row (along K, the input dimension). 16 bits per 32 weights = 0.5 bit/weight.
* ``packed``: uint8 ``(N, K // 2)``, each weight as a 4-bit level ``q`` in [-8, 7] stored as
  ``q + 8`` (0..15). A weight is ``scale * q``; there is no zero point.
* Nibble layout. Weights come in blocks of 32 along K, blocks in tiles of 8 (256 weights,
  128 bytes; the last tile of a row may hold fewer blocks, ``b``). Each block is first
  packed on its own into 16 bytes, byte ``j`` holding weight ``j`` in its low nibble and
  weight ``j + 16`` in its high nibble; a tile then interleaves its blocks in 4-byte pieces:
  tile byte ``4 * (c * b + L) + i`` is byte ``4 * c + i`` of block ``L`` (c, i in 0..3).

  Why: a decode kernel multiplies 4 consecutive bytes per 32-bit lane. Here one 32-byte
  load of a tile holds 4 weights of each of its 8 blocks, 32-bit lane ``L`` belonging to
  block ``L``; an AND gives the low nibbles, a shift and an AND the high ones, and the
  products of a whole tile add up in 8 int32 lanes that are the 8 blocks' dot products,
  ready to be scaled by the 8 scales (one 16-byte load), with no horizontal sums and no
  shuffles. NEON reads the same tile as two 16-byte halves of 4 blocks each.
  ``group_size`` is therefore a multiple of 32 (the decode kernel takes 32).

This is the storage cost of llama.cpp's Q4_0 (4.5 bits/weight) and a little under its
Q4_K_M (about 4.8). Symmetric was chosen over a scale and a minimum per group (asymmetric):
at equal bytes (asymmetric with groups of 64, 4.5 bits/weight) the symmetric format rounds
Gaussian and Student-t weights more finely and loses only where single columns are 10x
larger; asymmetric with groups of 32 (5.0 bits/weight) cuts the error by 6% (Gaussian) to
27% (outlier columns) but reads 11% more bytes per token, and needs a second correction per
group in the kernel. ``bench/bench_int4.py`` prints the comparison.

**Scale choice.** The value of largest magnitude in a group maps to level -8 (so the full
range [-8, 7] is used, not just [-7, 7]), or, where that gives the smaller squared error, to
-8.5 (a 6% finer step; that one value is clipped by half a step). The choice costs one more
pass at load time and removes about 3% of the error on Gaussian weights. Each weight is then
the nearest level under its group's scale as stored in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Weights per nibble block: the unit of the layout above, and so the step of group sizes.
BLOCK = 32
#: Blocks per tile of the layout above.
TILE = 8
#: The decode kernel's group size, and the default.
GROUP_SIZE = 32
#: Levels of the largest-magnitude weight tried per group (the first is the plain maximum).
_EXTREME_LEVELS = (8.0, 8.5)
#: Rows quantized at a time, bounding the temporary memory for large matrices.
_ROW_CHUNK = 1024


def _check_group_size(k: int, group_size: int) -> None:
    if k <= 0:
        raise ValueError("int4 needs a weight with at least one input feature (K > 0)")
    if group_size <= 0 or group_size % BLOCK:
        raise ValueError(f"int4 group_size must be a positive multiple of {BLOCK}, got {group_size}")
    if k % group_size:
        raise ValueError(f"int4 needs the input dimension K={k} to be a multiple of group_size={group_size}")


def _quantize_rows(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (n, K) -> int8 levels (n, K) in [-8, 7] and fp16 scales (n, K // group_size)."""
    g = w.reshape(w.shape[0], w.shape[1] // group_size, group_size)
    extreme = g.gather(-1, g.abs().argmax(-1, keepdim=True))  # signed, (n, G, 1)
    best = None
    for level in _EXTREME_LEVELS:
        s = (extreme / -level).to(torch.float16).float()
        # A scale that underflows float16 only occurs for groups of near-zero weights: level 0.
        q = (g / torch.where(s == 0, 1.0, s)).round_().clamp_(-8, 7)
        err = torch.addcmul(-g, q, s).square_().sum(-1, keepdim=True)
        if best is None:
            best = q, s, err
        else:
            better = err < best[2]
            best = torch.where(better, q, best[0]), torch.where(better, s, best[1]), torch.minimum(err, best[2])
    return best[0].reshape(w.shape).to(torch.int8), best[1][..., 0].to(torch.float16)


def _tiles(blocks: int) -> list[tuple[int, int, int]]:
    """(first block, tiles, blocks per tile) spans of a row: full tiles, then the short one."""
    spans = [(0, blocks // TILE, TILE)] if blocks >= TILE else []
    if blocks % TILE:
        spans.append((blocks - blocks % TILE, 1, blocks % TILE))
    return spans


def _interleave(blocks: torch.Tensor) -> torch.Tensor:
    """(n, G, 16) bytes per block -> (n, G * 16) bytes in tile order (see the layout above)."""
    n = blocks.shape[0]
    return torch.cat([blocks[:, s:s + t * b].reshape(n, t, b, 4, 4).transpose(2, 3).reshape(n, t * b * 16)
                      for s, t, b in _tiles(blocks.shape[1])], dim=1)


def _deinterleave(data: torch.Tensor) -> torch.Tensor:
    """(n, G * 16) bytes in tile order -> (n, G, 16) bytes per block: the inverse of ``_interleave``."""
    n = data.shape[0]
    return torch.cat([data[:, 16 * s:16 * (s + t * b)].reshape(n, t, 4, b, 4).transpose(2, 3).reshape(n, t * b, 16)
                      for s, t, b in _tiles(data.shape[1] // 16)], dim=1)


def pack_levels(q: torch.Tensor) -> torch.Tensor:
    """int levels (N, K) in [-8, 7] -> uint8 (N, K // 2) in the nibble layout above."""
    n, k = q.shape
    u = (q.to(torch.int16) + 8).to(torch.uint8).reshape(n, k // BLOCK, 2, BLOCK // 2)
    return _interleave(u[:, :, 0] | (u[:, :, 1] << 4))


def unpack_levels(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (N, K // 2) -> int8 levels (N, K) in [-8, 7]: the inverse of ``pack_levels``."""
    n, half = packed.shape
    b = _deinterleave(packed)  # (n, blocks, 16): byte j = weight j | weight j + 16
    u = torch.stack([b & 0x0F, b >> 4], dim=2)  # (n, blocks, 2, 16): weights 0..15, then 16..31
    return (u.to(torch.int8) - 8).reshape(n, 2 * half)


def quantize_int4(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (N, K) float weight to ``(packed uint8 (N, K // 2), scales fp16 (N, K // group_size))``.

    Raises ValueError for a non-2-D or non-float weight, non-finite values, scales beyond
    float16, or K not a multiple of ``group_size`` (itself a multiple of 32).
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"int4 quantizes a 2-D float weight (N, K), got {tuple(weight.shape)} {weight.dtype}")
    _check_group_size(weight.shape[1], group_size)
    w = weight.detach()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("int4 cannot quantize a weight with inf or nan values")
    if w.numel() and float(w.abs().max()) / 8 > torch.finfo(torch.float16).max:
        raise ValueError("int4 scales are float16: this weight's magnitude exceeds their range")
    packed, scales = [], []
    for rows in w.split(_ROW_CHUNK):
        q, s = _quantize_rows(rows.float(), group_size)
        packed.append(pack_levels(q))
        scales.append(s)
    if not packed:  # N == 0
        return (torch.empty(0, w.shape[1] // 2, dtype=torch.uint8),
                torch.empty(0, w.shape[1] // group_size, dtype=torch.float16))
    return torch.cat(packed), torch.cat(scales)


def _check_format(packed: torch.Tensor, scales: torch.Tensor, group_size: int) -> None:
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"int4 packed weights are uint8 (N, K // 2), got {tuple(packed.shape)} {packed.dtype}")
    if scales.dtype != torch.float16 or scales.dim() != 2:
        raise ValueError(f"int4 scales are float16 (N, K // group_size), got {tuple(scales.shape)} {scales.dtype}")
    k = 2 * packed.shape[1]
    _check_group_size(k, group_size)
    if scales.shape != (packed.shape[0], k // group_size):
        raise ValueError(f"int4 scales {tuple(scales.shape)} do not match packed {tuple(packed.shape)} "
                         f"with group_size={group_size} (expected {(packed.shape[0], k // group_size)})")


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, group_size: int = GROUP_SIZE,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (N, K) weight in ``dtype``: for products with many rows (prefill), which PyTorch's
    GEMM does best on plain floats. Computed in fp32, rounded to ``dtype`` once."""
    _check_format(packed, scales, group_size)
    n, k = packed.shape[0], 2 * packed.shape[1]
    q = unpack_levels(packed).float().reshape(n, k // group_size, group_size)
    return (q * scales.float()[..., None]).reshape(n, k).to(dtype)


def linear_int4_reference(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor,
                          group_size: int = GROUP_SIZE, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` with the dequantized weight, in fp32, returned in x's dtype.

    The exact product of the stored weight and unrounded activations: what the decode kernel
    approximates (it also rounds activations to int8 per group of 32)."""
    w = dequantize_int4(packed, scales, group_size, torch.float32)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features, the int4 weight expects {w.shape[1]}")
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)
