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
