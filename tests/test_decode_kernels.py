"""CPU decode kernels and int8 weights: same answers as PyTorch's own kernels, within rounding.

The streaming kernels are compiled on first use (about a minute, then cached), hence the
``slow`` mark; they are skipped on CPUs without AVX-512 BF16 / VNNI.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jvlm.inference import cpu_kernels
from jvlm.inference.engine import Engine
from jvlm.inference.prompt import build_request
from jvlm.inference.quantize import (
    Int8Weight,
    quantize_decoder_int8,
    quantize_rows,
    use_cpu_kernels,
)
from jvlm.inference.request import SamplingParams

needs_kernels = pytest.mark.skipif(not cpu_kernels.available(), reason="CPU lacks AVX-512 BF16/VNNI")


@pytest.fixture(scope="module")
def ext():
    if not cpu_kernels.available():
        pytest.skip("CPU lacks AVX-512 BF16/VNNI")
    e = cpu_kernels.load()
    if e is None:
        pytest.skip("the kernels could not be compiled here")
    return e


def test_quantize_rows_error_is_bounded_by_half_a_step():
    w = torch.randn(64, 96) * torch.logspace(-2, 1, 64)[:, None]  # rows of very different scale
    q, scales = quantize_rows(w)
    err = (q.float() * scales[:, None] - w).abs()
    assert bool((err <= scales[:, None] / 2 + 1e-7).all())  # each row keeps its own resolution


@pytest.mark.slow
@needs_kernels
@pytest.mark.parametrize("m,k,n", [(1, 2048, 300), (3, 100, 37), (7, 160, 33)])
def test_streaming_kernels_match_float_reference(ext, m, k, n):
    torch.manual_seed(0)
    x = torch.randn(m, k, dtype=torch.bfloat16)
    w = (torch.randn(n, k) * 0.05).to(torch.bfloat16)
    bias = torch.randn(n)
    ref = x.float() @ w.float().t() + bias
    out = ext.linear_bf16(x, w, bias).float()
    assert (out - ref).abs().max() <= 1e-2 * ref.abs().max()  # bf16 output rounding
    q, scales = quantize_rows(w.float())
    ref8 = x.float() @ (q.float() * scales[:, None]).t()
    out8 = ext.linear_int8(x.float(), q, scales, None)
    assert (out8 - ref8).abs().max() <= 1e-3 * ref8.abs().max()  # int16 activations: near exact
    # A row's result must not depend on its neighbours (batch == alone).
    assert torch.equal(ext.linear_bf16(x[-1:], w, bias), ext.linear_bf16(x, w, bias)[-1:])


@pytest.mark.slow
@needs_kernels
def test_decode_attention_matches_sdpa_with_padding_mask(ext):
    torch.manual_seed(0)
    b, h, kv, d, s = 2, 8, 2, 32, 50
    cache = torch.randn(b, kv, s + 14, d, dtype=torch.bfloat16)
    k, v = cache[:, :, :s], cache.flip(2)[:, :, :s]  # strided views, as the KV cache hands out
    q = torch.randn(b, h, 1, d, dtype=torch.bfloat16)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[0, :20] = False  # row 0 is left-padded
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask[:, None, None],
                                         enable_gqa=True)[:, :, 0]
    out = ext.decode_attention(q[:, :, 0], k, v, mask, d ** -0.5).float()
    assert (out - ref).abs().max() < 2e-2


@pytest.mark.slow
@needs_kernels
def test_bf16_model_with_kernels_keeps_its_answers(tiny_model_dir, ext):
    """Kernels on: decode logits within bf16 rounding of PyTorch's, and a padded batch of
    two still answers each prompt as it does alone."""
    import jvlm

    model, processor = jvlm.load(tiny_model_dir, dtype="bf16")
    prompts = ["A short one", "A somewhat longer prompt with more words in it"]
    reqs = lambda: [build_request(processor, p, params=SamplingParams(max_new_tokens=8, ignore_eos=True))
                    for p in prompts]
    plain = [Engine(model, processor).generate(r).token_ids for r in reqs()]
    assert use_cpu_kernels(model)
    engine = Engine(model, processor)
    assert engine._attention_kernels() is not None
    alone = [engine.generate(r).token_ids for r in reqs()]
    together = [r.token_ids for r in engine.generate_many(reqs())]
    assert together == alone
    agree = sum(a == b for x, y in zip(plain, alone) for a, b in zip(x, y))
    assert agree >= 14  # random tiny model: near-ties may flip a late token under other rounding


def test_int8_decoder_moves_logits_little(tiny_model_dir):
    """With PyTorch's int8 kernel (any machine): the logits stay close, the greedy choice too."""
    import jvlm

    model, processor = jvlm.load(tiny_model_dir, dtype="fp32")
    req = lambda: build_request(processor, "Describe the weather today", params=SamplingParams(max_new_tokens=6))
    engine = Engine(model, processor)
    ref = engine.next_token_logits(req())
    saved = quantize_decoder_int8(model, own_kernels=False)
    assert saved > 0 and isinstance(model.lm_head.weight, Int8Weight)
    engine = Engine(model, processor)
    got = engine.next_token_logits(req())
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert got.argmax() == ref.argmax()
    assert engine.generate(req()).completion_tokens >= 1
