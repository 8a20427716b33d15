"""Group-wise int4 weights: the format's rounding, its errors, and the decode kernel's answers.

The kernel is tested in every build of ``jvlm.inference.kernels`` this CPU can run (on a
current x86 CPU: AVX-512 and AVX2), about a minute each to compile on first use, hence the
``slow`` mark.
"""

from __future__ import annotations

import pytest
import torch

from jvlm.inference import kernels
from jvlm.inference.int4 import (
    dequantize_int4,
    linear_int4_reference,
    pack_levels,
    quantize_int4,
    unpack_levels,
)

def _weights(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """N(0, 0.02) weights with rows of different scale and a few outlier columns."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.02 * torch.logspace(-1, 1, n)[:, None]
    w[:, torch.randperm(k, generator=g)[:3]] *= 20
    return w


def test_layout_interleaves_blocks_of_a_tile_in_4_byte_pieces():
    """Block bytes: weight j low, j + 16 high; a tile of 8 blocks (and a short last tile of b)
    holds byte 4c + i of block L at 4 * (c * b + L) + i, as the module docstring states."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(-8, 8, (2, 32 * 11), generator=g, dtype=torch.int8)  # a tile of 8, one of 3
    packed = pack_levels(levels)
    assert packed.shape == (2, 32 * 11 // 2) and packed.dtype == torch.uint8

    def block_byte(r: int, block: int, j: int) -> int:
        return int(levels[r, 32 * block + j] + 8) | int(levels[r, 32 * block + j + 16] + 8) << 4

    for r in range(2):
        for first, b, offset in ((0, 8, 0), (8, 3, 128)):
            for c in range(4):
                for lane in range(b):
                    for i in range(4):
                        assert int(packed[r, offset + 4 * (c * b + lane) + i]) == block_byte(r, first + lane, 4 * c + i)
    for k in (32, 96, 256, 352, 2144):
        q = torch.randint(-8, 8, (3, k), generator=g, dtype=torch.int8)
        assert torch.equal(unpack_levels(pack_levels(q)), q)


@pytest.mark.parametrize("group_size", [32, 64])
def test_each_weight_is_the_nearest_level_of_its_group_scale(group_size):
    w = _weights(48, 256)
    packed, scales = quantize_int4(w, group_size)
    assert packed.shape == (48, 128) and scales.shape == (48, 256 // group_size) and scales.dtype == torch.float16
    q = unpack_levels(packed).float().reshape(48, -1, group_size)
    s = scales.float()[..., None]
    g = w.reshape(48, -1, group_size)
    err = (q * s - g).abs()
    # Nearest level: no other level in [-8, 7] is closer (ties aside).
    for step in (-1, 1):
        other = (q + step).clamp(-8, 7)
        assert bool((err <= (other * s - g).abs() + 1e-9).all())
    # Hence at most half a step wherever the weight lies within the levels' reach ...
    inside = (g / s >= -8.5) & (g / s <= 7.5)
    assert bool((err[inside] <= s.abs().expand_as(g)[inside] / 2 + 1e-9).all())
    # Each group's largest weight is put at level -8 or -8.5 before the scale is rounded to
    # float16 (relative error 2**-11), so it misses by at most half a step plus that drift.
    top = g.abs().argmax(-1, keepdim=True)
    assert bool((err.gather(-1, top) <= s.abs() * (0.5 + 8.5 * 2 ** -11) + 1e-9).all())
    assert torch.equal(dequantize_int4(packed, scales, group_size), (q * s).reshape(48, 256))


def test_chosen_scale_is_never_worse_than_the_group_maximum():
    w = _weights(64, 512, seed=1)
    packed, scales = quantize_int4(w)
    g = w.reshape(64, -1, 32)
    extreme = g.gather(-1, g.abs().argmax(-1, keepdim=True))
    plain = (extreme / -8).half().float()
    plain_err = ((g / plain).round().clamp(-8, 7) * plain - g).square().sum(-1)
    err = (dequantize_int4(packed, scales).reshape(64, -1, 32) - g).square().sum(-1)
    assert bool((err <= plain_err * (1 + 1e-6)).all())


def test_zero_groups_and_empty_weights():
    w = torch.zeros(3, 64)
    w[1, 32:] = torch.linspace(-1, 1, 32)
    packed, scales = quantize_int4(w)
    assert float(scales[0, 0]) == 0 and torch.equal(dequantize_int4(packed, scales)[0], torch.zeros(64))
    packed, scales = quantize_int4(torch.zeros(0, 64))
    assert packed.shape == (0, 32) and scales.shape == (0, 2)


@pytest.mark.parametrize("weight,group_size,message", [
    (torch.zeros(4, 48), 32, "K=48 to be a multiple of group_size=32"),
    (torch.zeros(4, 0), 32, "K > 0"),
    (torch.zeros(4, 96), 48, "multiple of 32"),
    (torch.zeros(64), 32, "2-D float weight"),
    (torch.zeros(4, 64, dtype=torch.int32), 32, "2-D float weight"),
    (torch.full((4, 64), float("nan")), 32, "inf or nan"),
    (torch.full((4, 64), 1e6), 32, "float16"),
])
def test_quantize_refuses_what_the_format_cannot_hold(weight, group_size, message):
    with pytest.raises(ValueError, match=message):
        quantize_int4(weight, group_size)


def test_dequantize_and_reference_check_shapes():
    packed, scales = quantize_int4(_weights(8, 128))
    with pytest.raises(ValueError, match="do not match"):
        dequantize_int4(packed, scales[:, :2])
    with pytest.raises(ValueError, match="uint8"):
        dequantize_int4(packed.to(torch.int16), scales)
    with pytest.raises(ValueError, match="float16"):
        dequantize_int4(packed, scales.float())
    with pytest.raises(ValueError, match="128"):
        linear_int4_reference(torch.zeros(1, 64), packed, scales)


def test_reference_is_the_float_product_with_the_stored_weight():
    w = _weights(37, 128)
    packed, scales = quantize_int4(w)
    x, bias = torch.randn(3, 128, dtype=torch.bfloat16), torch.randn(37)
    out = linear_int4_reference(x, packed, scales, bias=bias)
    assert out.dtype == torch.bfloat16
    exact = x.double() @ dequantize_int4(packed, scales).double().t() + bias.double()
    assert bool(((out.double() - exact).abs() <= 2 ** -8 * exact.abs() + 1e-5).all())  # bf16 output rounding


# ---- the compiled kernel ----------------------------------------------------------------

#: The code path each build of the package must have compiled for int4.
EXPECTED_PATH = {"avx512": "avx512-vnni", "avx2": "avx2", "neon": "neon"}


@pytest.fixture(scope="module", params=kernels.supported_isas())
def kernel(request):
    isa = request.param
    ks = kernels.load(isa)
    assert ks is not None, f"the {isa} kernels did not build (see the log)"
    assert ks._module.linear_int4_isa() == EXPECTED_PATH[isa]  # the flags selected the intended path
    return ks


def _activation_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Worst-case effect of rounding x to int8 per group of 32 (step amax / 127, error at most
    half a step per value) on x @ w.T, with w the dequantized weight: (M, N)."""
    m, k = x.shape
    half_step = x.float().reshape(m, -1, 32).abs().amax(-1) / 127 / 2  # (M, G)
    wsum = w.abs().reshape(w.shape[0], -1, 32).sum(-1)  # (N, G)
    return half_step @ wsum.t()


@pytest.mark.slow
@pytest.mark.parametrize("k,n", [(96, 37), (352, 33), (2048, 301)])  # 3 and 11 blocks: a partial last step
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_reference_within_activation_rounding(kernel, k, n, dtype):
    w = _weights(n, k)
    packed, scales = quantize_int4(w)
    wd = dequantize_int4(packed, scales)
    bias = torch.randn(n)
    x = (torch.randn(16, k) * torch.logspace(-2, 1, k)).to(dtype)  # uneven features, like hidden states
    for m in range(1, 17):
        out = kernel.linear_int4(x[:m], packed, scales, 32, bias if m % 2 else None)
        assert out.shape == (m, n) and out.dtype == dtype
        ref = linear_int4_reference(x[:m].float(), packed, scales, 32, bias if m % 2 else None)
        # int8 activations, plus fp32 summation, plus the output's own rounding in bf16
        tol = (_activation_bound(x[:m], wd) + 1e-5 * (x[:m].float().abs() @ wd.abs().t())
               + (2 ** -8 * ref.abs() if dtype == torch.bfloat16 else 0))
        assert bool(((out.float() - ref).abs() <= tol).all()), f"m={m}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_row_alone_equals_row_in_batch(kernel, dtype):
    packed, scales = quantize_int4(_weights(45, 352))
    bias = torch.randn(45)
    x = torch.randn(16, 352).to(dtype)
    full = kernel.linear_int4(x, packed, scales, 32, bias)
    five = kernel.linear_int4(x[:5], packed, scales, 32, bias)  # a tile of 4 and a tile of 1
    for m in range(16):
        alone = kernel.linear_int4(x[m:m + 1], packed, scales, 32, bias)
        assert torch.equal(alone[0], full[m])
        if m < 5:
            assert torch.equal(alone[0], five[m])


@pytest.mark.slow
def test_activation_rounding_is_small_next_to_the_weights(kernel):
    """int8 steps of amax/127 against int4 steps of amax/8: on Gaussian data the activations'
    rounding error is about 8/127 (1/16) of the weights'; it must stay well under 1/10."""
    torch.manual_seed(0)
    w = torch.randn(512, 2048) * 0.02
    packed, scales = quantize_int4(w)
    x = torch.randn(4, 2048)
    exact = x @ w.t()
    weights_only = linear_int4_reference(x, packed, scales)
    both = kernel.linear_int4(x, packed, scales, 32, None)
    ratio = (both - weights_only).norm() / (weights_only - exact).norm()
    assert ratio < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_give_nan_not_a_rounded_number(kernel, bad):
    packed, scales = quantize_int4(_weights(8, 128))
    x = torch.randn(3, 128)
    x[1, 77] = bad
    out = kernel.linear_int4(x, packed, scales, 32, None)
    assert bool(out[1].isnan().all()) and bool(out[[0, 2]].isfinite().all())


@pytest.mark.slow
def test_kernel_refuses_bad_inputs(kernel):
    packed, scales = quantize_int4(_weights(8, 128))
    x = torch.randn(2, 128)
    with pytest.raises(RuntimeError, match="group_size 32"):
        kernel.linear_int4(x, packed, scales, 64, None)
    with pytest.raises(RuntimeError, match="fp32 or bf16"):
        kernel.linear_int4(x.half(), packed, scales, 32, None)
    with pytest.raises(RuntimeError, match="does not match"):
        kernel.linear_int4(torch.randn(2, 64), packed, scales, 32, None)
    with pytest.raises(RuntimeError, match="bias"):
        kernel.linear_int4(x, packed, scales, 32, torch.zeros(8, dtype=torch.bfloat16))
