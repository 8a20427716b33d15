"""CPU decode kernels and int8 weights: same answers as PyTorch's own kernels, within rounding.

Kernel tests run for every instruction set this CPU can run (on a current x86 CPU both the
AVX-512 and the AVX2 builds); the NEON cores are cross-compiled for aarch64 and run under
qemu. The extensions are compiled on first use (about a minute each, then cached), hence
the ``slow`` mark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jvlm.inference import kernels
from jvlm.inference.engine import Engine
from jvlm.inference.prompt import build_request
from jvlm.inference.kv_attention import KernelAttention
from jvlm.inference.quantize import (
    Int4Linear,
    Int8Linear,
    QuantizeError,
    StreamedLinear,
    describe,
    prepare_decoding,
    quantize_rows,
)
from jvlm.inference.request import SamplingParams

HERE = kernels.supported_isas()
CHECK_CPP = Path(__file__).resolve().parent / "kernels_neon" / "check.cpp"


@pytest.fixture(scope="module", params=HERE or [pytest.param(None, marks=pytest.mark.skip(reason="no kernels for this CPU"))])
def ks(request):
    s = kernels.load(request.param)
    assert s is not None, f"the {request.param} kernels did not build (see the log)"
    return s


def test_quantize_rows_error_is_bounded_by_half_a_step():
    w = torch.randn(64, 96) * torch.logspace(-2, 1, 64)[:, None]  # rows of very different scale
    q, scales = quantize_rows(w)
    err = (q.float() * scales[:, None] - w).abs()
    assert bool((err <= scales[:, None] / 2 + 1e-7).all())  # each row keeps its own resolution


def test_jvlm_kernels_overrides_the_choice(monkeypatch):
    monkeypatch.setenv("JVLM_KERNELS", "off")
    assert kernels.default_isa() is None and kernels.load() is None
    monkeypatch.setenv("JVLM_KERNELS", "sse9")
    with pytest.raises(ValueError, match="JVLM_KERNELS"):
        kernels.default_isa()
    missing = [isa for isa in kernels.ISAS if isa not in HERE]  # x86 has no NEON, ARM no AVX
    monkeypatch.setenv("JVLM_KERNELS", missing[0])
    with pytest.raises(ValueError, match="cannot run"):
        kernels.load()
    for isa in HERE:
        monkeypatch.setenv("JVLM_KERNELS", isa.upper())
        assert kernels.default_isa() == isa
    monkeypatch.delenv("JVLM_KERNELS")
    assert kernels.default_isa() == (HERE[0] if HERE else None)
    with pytest.raises(ValueError, match="unknown instruction set"):
        kernels.load("sse9")


def _problem(m: int, k: int, n: int, dtype: torch.dtype):
    torch.manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k).to(dtype)
    w = (torch.randn(n, k) * 0.05).to(torch.bfloat16)
    return x, w, torch.randn(n)


# Odd K and N exercise every tail; K = 2048 + 37 the main loop too.
SHAPES = [(2048 + 37, 45), (100, 37), (160, 33), (77, 19), (1, 3)]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["x-fp32", "x-bf16"])
@pytest.mark.parametrize("k,n", SHAPES)
def test_linear_bf16_matches_float_reference(ks, dtype, k, n):
    for m in range(1, kernels.MAX_ROWS + 1):
        x, w, bias = _problem(m, k, n, dtype)
        ref = x.double() @ w.double().t() + bias.double()
        out = ks.linear_bf16(x, w, bias)
        assert out.dtype == dtype and out.shape == (m, n)
        # fp32: summation order only; bf16: the output's own rounding
        tol = 1e-5 if dtype == torch.float32 else 8e-3
        assert (out.double() - ref).abs().max() <= tol * ref.abs().max(), (m, k, n)
    assert torch.equal(ks.linear_bf16(x, w), ks.linear_bf16(x, w, torch.zeros(n)))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["x-fp32", "x-bf16"])
@pytest.mark.parametrize("k,n", SHAPES)
def test_linear_int8_matches_dequantized_reference(ks, dtype, k, n):
    for m in range(1, kernels.MAX_ROWS + 1):
        x, w, bias = _problem(m, k, n, dtype)
        q, scales = quantize_rows(w.float())
        ref = x.double() @ (q.double() * scales.double()[:, None]).t() + bias.double()
        out = ks.linear_int8(x, q, scales, bias)
        assert out.dtype == dtype and out.shape == (m, n)
        tol = 1e-4 if dtype == torch.float32 else 8e-3  # int16 activations: near exact
        assert (out.double() - ref).abs().max() <= tol * ref.abs().max(), (m, k, n)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["x-fp32", "x-bf16"])
def test_a_row_gets_the_same_bits_alone_or_in_a_batch(ks, dtype):
    x, w, bias = _problem(kernels.MAX_ROWS, 2048 + 37, 45, dtype)
    q, scales = quantize_rows(w.float())
    batch, batch8 = ks.linear_bf16(x, w, bias), ks.linear_int8(x, q, scales, bias)
    for m in range(kernels.MAX_ROWS):
        assert torch.equal(ks.linear_bf16(x[m:m + 1], w, bias), batch[m:m + 1]), m
        assert torch.equal(ks.linear_int8(x[m:m + 1], q, scales, bias), batch8[m:m + 1]), m
        assert torch.equal(ks.linear_bf16(x[m:], w, bias), batch[m:]), m  # every batch size


@pytest.mark.slow
def test_linear_refuses_what_it_cannot_do(ks):
    w = torch.zeros(8, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="at most 16 rows"):
        ks.linear_bf16(torch.zeros(kernels.MAX_ROWS + 1, 32), w)
    with pytest.raises(RuntimeError, match="bf16 w expected"):
        ks.linear_bf16(torch.zeros(1, 32), w.float())
    with pytest.raises(RuntimeError, match="bf16 or fp32"):
        ks.linear_int8(torch.zeros(1, 32, dtype=torch.float64), w.to(torch.int8), torch.ones(8))


@pytest.mark.slow
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32], ids=["x-bf16", "x-fp32"])
@pytest.mark.parametrize("w_dtype", [torch.bfloat16, torch.float32], ids=["w-bf16", "w-fp32"])
@pytest.mark.parametrize("d", [128, 2048 + 3, 1])
def test_rms_norm_matches_the_module(ks, x_dtype, w_dtype, d):
    from jvlm.model.text import RMSNorm

    torch.manual_seed(d)
    norm = RMSNorm(d, 1e-6)
    norm.weight.data = (torch.randn(d) * 0.5 + 1).to(w_dtype)
    x = (torch.randn(3, 5, d) * 3).to(x_dtype)
    with torch.inference_mode():
        ref = norm(x)
        got = ks.rms_norm(x, norm.weight, norm.eps)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    # the same roundings; only the sum of squares may differ in its last bits, which can move
    # the rounding of x * r and then of weight * that: at most a couple of units in the last place
    ulp = 2.0 ** -6 if ref.dtype == torch.bfloat16 else 2.0 ** -21
    assert ((got.double() - ref.double()).abs() <= ulp * ref.double().abs() + 1e-30).all()


def test_rms_norm_refuses_what_it_cannot_do(ks):
    w = torch.ones(8)
    with pytest.raises(RuntimeError, match="contiguous"):
        ks.rms_norm(torch.zeros(8, 4).t(), w, 1e-6)
    with pytest.raises(RuntimeError, match="bf16 or fp32"):
        ks.rms_norm(torch.zeros(2, 8, dtype=torch.float16), w, 1e-6)


def test_norm_kernel_leaves_training_to_pytorch(ks):
    """With the seam set, a norm that needs gradients still gets them (the kernel has none)."""
    from jvlm.model.text import RMSNorm

    norm = RMSNorm(16, 1e-6)
    norm.kernel = ks.rms_norm
    x = torch.randn(2, 16, requires_grad=True)
    norm(x).sum().backward()
    assert x.grad is not None and norm.weight.grad is not None
    with torch.no_grad():
        assert torch.allclose(norm(x), ks.rms_norm(x.detach(), norm.weight.detach(), 1e-6))
        half = norm.half()  # a dtype the kernel does not take: PyTorch's operations, no error
        assert half(x.half()).dtype == torch.float16


# One unit in the last place, relative: a kernel's rounding may sit one unit from PyTorch's
# where the sum of squares of a norm (or the last ulp of exp in SiLU) differs in its last bit.
UNIT = {torch.bfloat16: 2.0 ** -7, torch.float32: 2.0 ** -22}


def _within_units(got, ref, units, scale=None):
    scale = ref.double().abs() if scale is None else scale
    return bool(((got.double() - ref.double()).abs() <= units * UNIT[ref.dtype] * scale + 1e-30).all())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_add_norm_and_gate_kernels_match_the_modules(ks, dtype):
    from jvlm.model.text import RMSNorm

    torch.manual_seed(1)
    d, f = 2048 + 6, 6144 + 3  # odd tails on purpose
    norm = RMSNorm(d, 1e-6).to(dtype)
    norm.weight.data = (torch.randn(d) * 0.5 + 1).to(dtype)
    x, y = (torch.randn(3, d) * 3).to(dtype), torch.randn(3, d).to(dtype)
    u = (torch.randn(3, 2 * f) * 4).to(dtype)
    u[0, f:f + 4] = torch.tensor([-100.0, 100.0, 0.0, float("nan")])  # silu's far tails, NaN
    with torch.inference_mode():
        total, h = ks.add_rms_norm(x, y, norm.weight, norm.eps)
        gated = ks.silu_mul(u)
        ref_h, ref_gated = norm(x + y), F.silu(u[:, f:]) * u[:, :f]
    assert torch.equal(total, x + y) and h.dtype == dtype and gated.shape == (3, f)
    assert _within_units(h, ref_h, 2)
    # far tails: silu(100) = 100; silu(-100) is -0 in PyTorch, a number below 1e-30 here
    assert torch.isnan(gated[0, 3]) and gated[0, 1] == ref_gated[0, 1] and abs(float(gated[0, 0])) < 1e-30
    usual = ~torch.isnan(ref_gated)
    usual[0, 0] = False
    assert _within_units(gated[usual], ref_gated[usual], 2)  # two exps, each about a unit from e^x
    with pytest.raises(RuntimeError, match="one dtype"):
        ks.add_rms_norm(x, y.float() if dtype == torch.bfloat16 else y.bfloat16(), norm.weight, 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("h,kv,d", [(16, 8, 128), (8, 2, 32), (4, 4, 16)])
def test_qk_rope_cache_matches_the_attention_module(ks, dtype, h, kv, d):
    """q as TextAttention hands it to the attention, and k, v where it writes them in the
    cache (a view that starts after dropped columns, as after a batch's shortest request left)."""
    from jvlm.config import TextConfig
    from jvlm.model.text import KVCache, TextAttention, rope_cos_sin

    torch.manual_seed(h + d)
    cfg = TextConfig(hidden_size=64, n_heads=h, n_kv_heads=kv, head_dim=d, n_layers=2)
    attn = TextAttention(cfg).to(dtype)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
        for norm in (attn.q_lnorm, attn.k_lnorm):
            norm.weight.copy_(torch.rand(d) + 0.5)
    b, layer = 3, 1
    caches = []
    for _ in range(2):
        c = KVCache(2, b, kv, d, 12, dtype)
        c.length = 7
        c.drop_front(2)  # length 5, a view into the buffer
        caches.append(c)
    positions = torch.tensor([[5], [3], [0]])  # left-padded rows sit at smaller positions
    cos, sin = rope_cos_sin(positions, d, 1e6, dtype)
    x = torch.randn(b, 1, 64).to(dtype)
    seen = {}

    def spy(q, k, v, mask):
        seen["q"] = q
        return torch.zeros_like(q)

    attn.attention = spy
    # a projection that is not a bare nn.Linear (as in decoding: a DecodeLinear) gets its bias
    # added after its product is rounded, which is what the kernel does
    attn.qkv_w = torch.nn.Sequential(attn.qkv_w)
    with torch.inference_mode():
        attn(x, cos, sin, None, caches[0], layer)
        qkv = attn.qkv_w(x.reshape(b, 64))
        q = ks.qk_rope_cache(qkv, attn.q_b, attn.k_b, attn.v_b, attn.q_lnorm.weight, attn.k_lnorm.weight,
                             attn.q_lnorm.eps, cos.reshape(b, d), sin.reshape(b, d), caches[1].k, caches[1].v, layer, 5)
    ref_q = seen["q"][:, :, 0]
    ref_k, ref_v = caches[0].k[layer, :, :, 5], caches[0].v[layer, :, :, 5]
    got_k, got_v = caches[1].k[layer, :, :, 5], caches[1].v[layer, :, :, 5]
    # a norm output one unit off moves both products of its rotation by a unit each
    assert _within_units(q, ref_q, 3, ref_q.double().abs().amax(-1, keepdim=True))
    assert _within_units(got_k, ref_k, 3, ref_k.double().abs().amax(-1, keepdim=True))
    assert torch.equal(got_v, ref_v)
    untouched = torch.ones(12 - 2, dtype=torch.bool)
    untouched[5] = False
    assert not caches[1].k[:, :, :, untouched].any() and not caches[1].k[0].any()  # nothing else written
    with pytest.raises(RuntimeError, match="outside the cache"):
        ks.qk_rope_cache(qkv, attn.q_b, attn.k_b, attn.v_b, attn.q_lnorm.weight, attn.k_lnorm.weight, 1e-6,
                         cos.reshape(b, d), sin.reshape(b, d), caches[1].k, caches[1].v, layer, 10)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2048, 2048 + 96], ids=["full-tiles", "short-last-tile"])
def test_dequantize_int4_kernel_is_the_reference_dequantization(ks, k):
    from jvlm.inference import int4

    packed, scales = int4.quantize_int4(torch.randn(40, k) * 0.02)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(ks.dequantize_int4(packed, scales, 32, dtype), int4.dequantize_int4(packed, scales, 32, dtype))
        assert torch.equal(ks.dequantize_int4(packed[7:23], scales[7:23], 32, dtype),
                           int4.dequantize_int4(packed, scales, 32, dtype)[7:23])  # a block of rows alone
    with pytest.raises(RuntimeError, match="do not match"):
        ks.dequantize_int4(packed, scales[:, 1:].contiguous(), 32, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4"])
def test_products_of_many_rows_widen_the_weight_in_blocks(ks, fmt, monkeypatch):
    """Prefill (more than MAX_ROWS rows) multiplies by the weight widened a block of output rows
    at a time: the same product as with the whole weight widened at once."""
    from jvlm.inference import decode_linear

    torch.manual_seed(5)
    w = torch.randn(200, 256) * 0.05
    layer = {"bf16": lambda: StreamedLinear(w, torch.float32, ks), "int8": lambda: Int8Linear(w, torch.float32, ks),
             "int4": lambda: Int4Linear(w, torch.float32, ks)}[fmt]()
    x = torch.randn(40, 256)
    whole = F.linear(x, layer.dense_weight())
    monkeypatch.setattr(decode_linear, "DENSE_BLOCK_BYTES", 64 * 256 * 4)  # 64 rows a block: 4 blocks, the last short
    with torch.inference_mode():
        got = layer(x)
    torch.testing.assert_close(got, whole)
    assert got.shape == (40, 200)


def _random_norms_(model, seed):
    """Norm scales away from init_random's ones, so that each norm's own weight matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.model.language_model.named_parameters():
            if "lnorm" in name or "ln_f" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model


def _decoder_steps(decoder, embeds, mask, steps, cache):
    """Prefill ``embeds`` then ``steps`` (B, 1, hidden) one at a time: hidden states of the steps."""
    decoder(embeds, None if mask is None else mask[:, :embeds.shape[1]], cache)
    out = []
    for t, x in enumerate(steps):
        end = embeds.shape[1] + t + 1
        out.append(decoder(x, None if mask is None else mask[:, :end], cache))
    return torch.cat(out, 1)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("fmt", [None, "int8", "int4"], ids=["bf16-weights", "int8", "int4"])
def test_fused_decode_step_computes_what_the_modules_compute(ks, dtype, fmt):
    """The whole step in kernel calls against the same step through the modules (the step
    seam unset): the same hidden states and KV cache, for a left-padded batch of three."""
    from jvlm.config import JinaVLMConfig
    from jvlm.inference.decode_step import FusedDecodeStep
    from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random

    cfg = JinaVLMConfig.preset("tiny")
    model = _random_norms_(init_random(JinaVLMForConditionalGeneration(cfg), seed=3), 3).to(dtype).eval()
    prepare_decoding(model, fmt, ks, stored_dtype=torch.bfloat16)  # as released: fp32 compute streams bf16
    decoder = model.model.language_model
    step = decoder.step_kernel
    assert isinstance(step, FusedDecodeStep)
    g = torch.Generator().manual_seed(0)
    hidden = cfg.text.hidden_size
    embeds = torch.randn(3, 7, hidden, generator=g).to(dtype)
    steps = [torch.randn(3, 1, hidden, generator=g).to(dtype) for _ in range(4)]
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :1] = 0
    results = {}
    with torch.inference_mode():
        for fused in (True, False):
            decoder.set_step_kernel(step if fused else None)
            cache = decoder.new_cache(3, 8)  # grows during the steps
            assert not fused or step.takes(decoder, steps[0], cache)
            results[fused] = (_decoder_steps(decoder, embeds, mask, steps, cache), cache.filled())
    (h, (k, v)), (ref_h, (ref_k, ref_v)) = results[True], results[False]
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(k, ref_k)
    torch.testing.assert_close(v, ref_v)


@pytest.mark.slow
def test_fused_decode_step_gives_a_row_the_same_bits_alone_or_in_a_batch(ks):
    from jvlm.config import JinaVLMConfig
    from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random

    cfg = JinaVLMConfig.preset("tiny")
    model = _random_norms_(init_random(JinaVLMForConditionalGeneration(cfg), seed=4), 4).to(torch.bfloat16).eval()
    prepare_decoding(model, "int4", ks)
    decoder, t = model.model.language_model, cfg.text
    g = torch.Generator().manual_seed(1)
    shape = (t.n_layers, 3, t.n_kv_heads, 6, t.head_dim)
    past_k, past_v = torch.randn(shape, generator=g).bfloat16(), torch.randn(shape, generator=g).bfloat16()
    x = torch.randn(3, 1, t.hidden_size, generator=g).bfloat16()
    with torch.inference_mode():
        together = decoder.new_cache(3, 8)
        together.fill(past_k, past_v)
        batch = decoder(x, None, together)
        for row in range(3):
            alone = decoder.new_cache(1, 8)
            alone.fill(past_k[:, row:row + 1], past_v[:, row:row + 1])
            assert torch.equal(decoder(x[row:row + 1], None, alone), batch[row:row + 1])
            assert torch.equal(alone.k[:, 0, :, :7], together.k[:, row, :, :7])


@pytest.mark.slow
def test_fused_decode_step_leaves_what_it_was_not_written_for_to_the_modules(ks):
    from jvlm.config import JinaVLMConfig
    from jvlm.model.attention import SdpaAttention
    from jvlm.model.text import ExternalCache
    from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random

    cfg = JinaVLMConfig.preset("tiny")
    model = init_random(JinaVLMForConditionalGeneration(cfg)).eval()
    prepare_decoding(model, "int8", ks)
    decoder = model.model.language_model
    step = decoder.step_kernel
    x = torch.randn(2, 1, cfg.text.hidden_size)
    cache = decoder.new_cache(2, 4)
    with torch.no_grad():
        assert step.takes(decoder, x, cache)
        assert not step.takes(decoder, x.bfloat16(), cache)  # another dtype than the cache's
        assert not step.takes(decoder, torch.randn(1, 1, cfg.text.hidden_size), cache)  # rows != cache rows
        from transformers import DynamicCache

        assert not step.takes(decoder, x, ExternalCache(DynamicCache()))  # Transformers' own cache
    assert not step.takes(decoder, x, cache)  # autograd on: the modules
    with torch.no_grad():
        down = decoder.layers[1].ffn.down
        decoder.layers[1].ffn.down = torch.nn.Linear(down.in_features, down.out_features, bias=False)  # e.g. wrapped
        assert not step.takes(decoder, x, cache)
        assert describe(model).decode_step == "modules"  # and the reports say so
        decoder.layers[1].ffn.down = down
        decoder.set_attention(SdpaAttention())
        assert not step.takes(decoder, x, cache)
        # declined steps still run, through the modules
        decoder(torch.randn(2, 3, cfg.text.hidden_size), None, cache)
        assert decoder(x, None, cache).shape == x.shape and cache.length == 4


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("h,kv,d", [(8, 2, 32), (16, 8, 128), (4, 4, 16), (8, 1, 64), (8, 8, 16)])
def test_decode_attention_matches_sdpa_with_padding_mask(ks, dtype, h, kv, d):
    torch.manual_seed(h * kv + d)
    b, s = 2, 50
    cache = torch.randn(b, kv, s + 14, d).to(dtype)
    k, v = cache[:, :, :s], cache.flip(2)[:, :, :s]  # strided views, as the KV cache hands out
    q = torch.randn(b, h, 1, d).to(dtype)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[0, :20] = False  # row 0 is left-padded
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask[:, None, None],
                                         enable_gqa=True)[:, :, 0]
    out = ks.decode_attention(q[:, :, 0], k, v, mask, d ** -0.5)
    assert out.dtype == dtype and out.shape == (b, h, d)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (out.double() - ref).abs().max() < tol
    unmasked = ks.decode_attention(q[:, :, 0], k, v, None, d ** -0.5).double()
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), enable_gqa=True)[:, :, 0]
    assert (unmasked - ref).abs().max() < tol


def _run_core_check(compiler: str, flags: list[str], runner: list[str], tmp_path: Path) -> None:
    exe = tmp_path / "check"
    build = subprocess.run([compiler, "-O2", "-std=c++17", "-ffp-contract=off", *flags,
                            f"-I{kernels.CSRC}", str(CHECK_CPP), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.startswith("0 of "), run.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
                    reason="needs aarch64-linux-gnu-g++ and qemu-aarch64 (scripts/install_test_extras.sh)")
def test_neon_cores_match_scalar_reference_under_qemu(tmp_path):
    _run_core_check("aarch64-linux-gnu-g++", ["-static", *kernels.BUILD_FLAGS["neon"]], ["qemu-aarch64"], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("isa", [i for i in HERE if i != "neon"])
def test_x86_cores_match_scalar_reference(isa, tmp_path):
    _run_core_check(os.environ.get("CXX", "c++"), kernels.BUILD_FLAGS[isa], [], tmp_path)


def _requests(processor, prompts, n=8):
    return [build_request(processor, p, params=SamplingParams(max_new_tokens=n, ignore_eos=True)) for p in prompts]


PROMPTS = ["A short one", "A somewhat longer prompt with more words in it"]


@pytest.mark.slow
@pytest.mark.parametrize("compute", ["bf16", "fp32"])
def test_kernels_keep_the_model_answers_alone_and_batched(ks, tiny_model_dir, compute):
    """Kernels on (bf16 weights streamed; in fp32 compute the weights stay bf16 in memory, as on
    CPUs without native bf16): decode answers agree with PyTorch's path within rounding, and
    a padded batch of two answers each prompt as it does alone (bit-identical rows)."""
    import jvlm

    model, processor = jvlm.load(tiny_model_dir, dtype="bf16")
    if compute == "fp32":  # what the loader does on such a CPU: bf16 checkpoint, fp32 arithmetic
        model = model.float()
    plain = [Engine(model, processor).generate(r).token_ids for r in _requests(processor, PROMPTS)]
    setup = prepare_decoding(model, None, ks, stored_dtype=torch.bfloat16)
    assert setup.weights == "bf16" and setup.linear_kernel == ks.name and setup.compute_dtype == compute
    assert all(isinstance(m.weight, torch.Tensor) and m.weight.dtype == torch.bfloat16
               for m in model.modules() if isinstance(m, StreamedLinear))
    assert isinstance(model.model.language_model.attention, KernelAttention)
    from jvlm.model.text import RMSNorm

    norms = [m for m in model.model.language_model.modules() if isinstance(m, RMSNorm)]
    assert norms and all(m.kernel is not None for m in norms)  # the norm seam is set too
    from jvlm.inference.decode_step import FusedDecodeStep

    assert isinstance(model.model.language_model.step_kernel, FusedDecodeStep)  # and the step seam
    assert describe(model).decode_step == f"{ks.name} (fused decode step)"
    engine = Engine(model, processor)
    alone = [engine.generate(r).token_ids for r in _requests(processor, PROMPTS)]
    together = [r.token_ids for r in engine.generate_many(_requests(processor, PROMPTS))]
    assert together == alone
    agree = sum(a == b for x, y in zip(plain, alone) for a, b in zip(x, y))
    assert agree >= 14  # random tiny model: near-ties may flip a late token under other rounding


def _next_logits(model, processor, text="Describe the weather today"):
    req = build_request(processor, text, params=SamplingParams(max_new_tokens=6))
    return Engine(model, processor).next_token_logits(req)


def test_int8_decoder_with_pytorchs_kernel_moves_logits_little(tiny_model_dir):
    """With PyTorch's int8 kernel (any machine): the logits stay close, the greedy choice too."""
    import jvlm

    model, processor = jvlm.load(tiny_model_dir, dtype="fp32")
    ref = _next_logits(model, processor)
    setup = prepare_decoding(model, "int8", None)
    assert setup.weights == "int8" and setup.linear_kernel == "pytorch"
    assert isinstance(model.lm_head, Int8Linear) and model.lm_head.qweight.dtype == torch.int8
    assert model.dtype == torch.float32  # the compute dtype, not the storage format
    got = _next_logits(model, processor)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert got.argmax() == ref.argmax()
    req = build_request(processor, "Describe the weather today", params=SamplingParams(max_new_tokens=6))
    assert Engine(model, processor).generate(req).completion_tokens >= 1  # and it still generates


@pytest.mark.slow
@pytest.mark.parametrize("fmt,tolerance", [("int8", 0.05), ("int4", 0.25)])
def test_quantized_decoders_with_the_kernels_stay_close_and_batch_invariant(ks, tiny_model_dir, fmt, tolerance):
    """int8 and int4 weights through the kernels: logits near the float model's (int4's
    rounding is about 16x int8's, hence the wider bound) and rows the same alone or batched."""
    import jvlm

    model, processor = jvlm.load(tiny_model_dir, dtype="fp32")
    ref = _next_logits(model, processor)
    setup = prepare_decoding(model, fmt, ks)
    assert setup.weights == fmt and setup.linear_kernel == ks.name
    assert isinstance(model.lm_head, Int8Linear if fmt == "int8" else Int4Linear)
    got = _next_logits(model, processor)
    assert (got - ref).abs().max() < tolerance * ref.abs().max()
    engine = Engine(model, processor)
    alone = [engine.generate(r).token_ids for r in _requests(processor, PROMPTS)]
    assert [r.token_ids for r in engine.generate_many(_requests(processor, PROMPTS))] == alone


def test_int4_needs_the_kernels_and_says_so(tiny_model_dir):
    import jvlm

    model, _ = jvlm.load(tiny_model_dir, dtype="fp32")
    with pytest.raises(QuantizeError, match="int4 needs"):
        prepare_decoding(model, "int4", None)
    with pytest.raises(QuantizeError, match="unknown weight format"):
        prepare_decoding(model, "int3", None)
    assert describe(model).weights == "fp32"  # nothing was converted by the failed calls
