"""Model invariants that need no real weights (tiny preset, random init, fp32)."""

from __future__ import annotations

import pytest
import torch

from jvlm.config import JinaVLMConfig
from jvlm.model.text import build_positions_and_mask
from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return init_random(JinaVLMForConditionalGeneration(JinaVLMConfig.preset("tiny")), seed=1).eval()


def _inputs(b=2, t=48, crops=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (b, t), generator=g)
    imgs = torch.rand(b, crops, 729, 588, generator=g) * 2 - 1
    masks = torch.ones(b, crops, 729)
    idx = torch.full((b, crops, 196), -10000)
    idx[:, 0, :30] = torch.arange(5, 35)  # 30 feature slots at positions 5..34
    ids[:, 5:35] = 1024 + 2  # <im_patch>
    return ids, imgs, masks, idx


@torch.no_grad()
def test_cached_decoding_equals_full_forward(model):
    ids, imgs, masks, idx = _inputs()
    full = model(ids, images=imgs, image_masks=masks, image_input_idx=idx).logits
    cache = model.new_cache(ids.shape[0], 4)  # small on purpose: must grow
    steps = [model(ids[:, :37], images=imgs, image_masks=masks, image_input_idx=idx, past_key_values=cache).logits]
    for t in range(37, ids.shape[1]):
        steps.append(model(ids[:, t:t + 1], past_key_values=cache).logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@torch.no_grad()
def test_left_padding_gives_the_same_logits_as_the_unpadded_row(model):
    ids, imgs, masks, idx = _inputs(b=1)
    alone = model(ids, images=imgs, image_masks=masks, image_input_idx=idx).logits[0]
    pad = 7
    padded = torch.cat([torch.zeros(1, pad, dtype=ids.dtype), ids], 1)
    att = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones_like(ids)], 1)
    idx_p = torch.where(idx >= 0, idx + pad, idx)
    out = model(padded, attention_mask=att, images=imgs, image_masks=masks, image_input_idx=idx_p).logits[0, pad:]
    assert torch.allclose(out, alone, atol=1e-5)


def test_positions_come_from_the_attention_mask():
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    di = build_positions_and_mask(am, 5, 0, 2, "cpu")
    assert di.positions.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    # every query row sees at least one key (no NaN rows for left padding)
    assert bool(di.mask.any(-1).all())


@torch.no_grad()
def test_image_features_are_added_not_replacing(model):
    ids, imgs, masks, idx = _inputs(b=1)
    embeds_plain = model.model.embed(ids)
    feats = model.model.image_features(imgs, masks)
    merged = model.model.embed(ids, image_features=feats, image_input_idx=idx)
    pos = idx[0, 0, :30]
    assert torch.allclose(merged[0, pos], embeds_plain[0, pos] + feats[0, 0, :30], atol=1e-6)
    untouched = torch.ones(ids.shape[1], dtype=torch.bool)
    untouched[pos] = False
    assert torch.equal(merged[0, untouched], embeds_plain[0, untouched])


@torch.no_grad()
def test_padding_crops_are_zeroed_and_real_crops_are_not(model):
    _, imgs, _, _ = _inputs(b=1, crops=2)
    imgs[0, 1] = -1.0  # a batch-padding crop
    feats = model.model.vision_model.encode(imgs)
    assert torch.count_nonzero(feats[0, 1]) == 0
    assert torch.count_nonzero(feats[0, 0]) > 0


@torch.no_grad()
def test_last_tile_mask_quirk_adds_pad_embed_1(model):
    conn = model.model.vision_model.vl_connector
    feats = torch.zeros(1, 1, 729, conn.pad_embed.shape[1])
    ones = torch.ones(1, 1, 729)
    a = conn.pool(feats, ones)
    b = conn.pool(feats, -ones)  # the -1 sentinel row counts as partial padding
    c = conn.pool(feats, torch.zeros(1, 1, 729))  # full padding uses pad_embed[0]
    assert not torch.allclose(a, b) and not torch.allclose(b, c)
    expect_b = conn.pool(feats + conn.pad_embed[1], ones)
    assert torch.allclose(b, expect_b, atol=1e-6)


def test_vit_runs_only_the_blocks_it_needs(model):
    cfg = JinaVLMConfig.preset("jina-vlm")
    assert cfg.vision.tap_indices() == [24, 18]
    assert cfg.vision.n_layers_used() == 25  # blocks 25, 26 and post_lnorm are never used
    vt = model.model.vision_model
    calls = []
    hooks = [blk.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, blk in enumerate(vt.layers)]
    try:
        with torch.no_grad():
            vt.encode(torch.rand(1, 1, 729, 588))
    finally:
        for h in hooks:
            h.remove()
    assert calls == list(range(model.cfg.vision.n_layers_used()))


@torch.no_grad()
def test_bf16_forward_runs_on_cpu_and_tracks_fp32(model):
    ids, imgs, masks, idx = _inputs(b=1)
    ref = model(ids, images=imgs, image_masks=masks, image_input_idx=idx).logits
    m16 = init_random(JinaVLMForConditionalGeneration(JinaVLMConfig.preset("tiny")), seed=1).to(torch.bfloat16).eval()
    out = m16(ids, images=imgs, image_masks=masks, image_input_idx=idx).logits
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@torch.no_grad()
def test_value_gate_halves_matter(model):
    """Swapping the [value | gate] halves must change the output (guards the fused order)."""
    mlp = model.model.language_model.layers[0].ffn
    x = torch.randn(2, 3, model.cfg.text.hidden_size)
    ref = mlp(x)
    w = mlp.up.weight.clone()
    n = mlp.size
    try:
        mlp.up.weight.copy_(torch.cat([w[n:], w[:n]]))
        assert not torch.allclose(mlp(x), ref, atol=1e-4)
    finally:
        mlp.up.weight.copy_(w)


@torch.no_grad()
def test_loss_ignores_padding_and_structural_labels(model):
    ids, imgs, masks, idx = _inputs(b=1)
    labels = ids.clone()
    labels[:, :5] = -1
    labels[:, 5:35] = 1024 + 2  # <im_patch>: not in lm_head's rows, so not a target
    out = model(ids, images=imgs, image_masks=masks, image_input_idx=idx, labels=labels)
    manual = torch.nn.functional.cross_entropy(out.logits[0, 35:].float(), labels[0, 35:])
    assert torch.allclose(out.loss, manual, atol=1e-6)
