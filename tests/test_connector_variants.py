"""Connector ablation variants selected by ``pooling_type``: "mean" and "none" (tiny preset).

The released "attention_meanq" connector is covered by the other model and weight tests; here
it only serves as the reference for key names and token counts.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import jvlm
from jvlm.config import POOLING_TYPES, JinaVLMConfig
from jvlm.errors import CheckpointError
from jvlm.loading import save_pretrained
from jvlm.model.connector import VisionLanguageConnector
from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random
from jvlm.processing.image import image_layout
from jvlm.random_model import build_random_model

VARIANTS = ("attention_meanq", "mean", "none")
PROMPT = "<|image|>What is in the picture?"


def _config(pooling_type: str) -> JinaVLMConfig:
    """The tiny preset with ``pooling_type``; "none" also gets the 1x1 window it requires."""
    cfg = JinaVLMConfig.preset("tiny")
    cfg.connector.pooling_type = pooling_type
    if pooling_type == "none":
        for part in (cfg.connector, cfg.image):
            part.pooling_h = part.pooling_w = 1
    return cfg.validate()


def _img(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def _tokens_per_crop(pooling_type: str, grid: int) -> int:
    side = grid if pooling_type == "none" else math.ceil(grid / 2)  # the tiny preset pools 2x2
    return side * side


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    """(pooling_type, model, processor) with random weights."""
    model, processor = build_random_model("tiny", seed=1, config=_config(request.param))
    return request.param, model, processor


def test_each_variant_has_its_own_pooling_parameters(variant):
    kind, model, _ = variant
    conn = model.model.vision_model.vl_connector
    names = set(dict(conn.named_parameters()))
    common = {"pad_embed", "pooling.out.weight", "pooling.out.bias", "projector.up.weight", "projector.down.weight"}
    attention = {"pooling.q_w.weight", "pooling.kv_w.weight", "pooling.q_b", "pooling.k_b", "pooling.v_b"}
    assert names == (common | attention if kind == "attention_meanq" else common)
    v = model.cfg.vision
    # pooling.out maps into the ViT width, so the projector input is the same for every variant
    feat_dim = len(v.vit_layers) * v.hidden_size
    out_in = conn.pooling.out.weight.shape[1]
    assert out_in == (v.n_heads * v.head_dim if kind == "attention_meanq" else feat_dim)
    assert conn.pooling.out.weight.shape[0] == v.hidden_size == conn.projector.up.weight.shape[1]


@torch.no_grad()
def test_forward_with_one_image_has_one_feature_per_im_patch_token(variant):
    kind, model, processor = variant
    batch = processor(text=PROMPT, images=[_img(200, 300)], max_crops=1)
    enc = processor.encode(PROMPT, [_img(200, 300)], max_crops=1)
    (layout,) = [p.layout for p in enc.processed]
    assert layout.tiling == (1, 1) and layout.n_crops == 2  # thumbnail + one tile, nothing dropped
    per_crop = _tokens_per_crop(kind, processor.image_config.grid)
    n_patch_tokens = int((batch["input_ids"] == processor.token_ids.im_patch).sum())
    assert n_patch_tokens == layout.n_feature_tokens == 2 * per_crop
    assert batch["image_input_idx"].shape == (1, 2, per_crop)

    feats = model.model.image_features(batch["images"], batch["image_masks"])
    assert feats.shape == (1, 2, per_crop, model.cfg.text.hidden_size)
    # The model's own count check (features vs <im_patch> tokens) runs inside this forward.
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.logits).all()


def test_no_pooling_keeps_every_patch_and_still_drops_overlap_margins():
    """With 1x1 windows each tile keeps its 19-patch window plus the outer 4-patch margins."""
    cfg = _config("none")
    layout = image_layout(378, 640, cfg.image, max_crops=2)
    assert layout.tiling == (1, 2)
    left, right = cfg.image.overlap_margins
    window = cfg.image.window_patches
    w_tok = (left + window) + (window + right)  # the inner margins facing each other are dropped
    assert layout.crop_pooled_hw == (27, 27)
    assert layout.pooled_hw == (27, w_tok) == (27, 46)
    assert layout.n_feature_tokens == 27 * 27 + 27 * 46

    _, processor = build_random_model("tiny", seed=1, config=cfg)
    enc = processor.encode(PROMPT, [_img(378, 640)], max_crops=2)
    idx = enc.image_input_idx
    ids = np.array(enc.input_ids)
    targets = idx[idx >= 0]
    # every kept patch feeds a distinct <im_patch> token, and every <im_patch> gets a patch
    assert len(np.unique(targets)) == len(targets) == layout.n_feature_tokens
    assert set(targets.tolist()) == set(np.flatnonzero(ids == processor.token_ids.im_patch).tolist())


def _connector(pooling_type: str) -> VisionLanguageConnector:
    """A connector with weights large enough (std 0.3) that its outputs are far from zero."""
    return init_random(VisionLanguageConnector(_config(pooling_type)), seed=2, std=0.3).eval()


def _by_hand(conn: VisionLanguageConnector, pooled_in: torch.Tensor) -> torch.Tensor:
    """pooling.out, then the SwiGLU projector ([value | gate] halves), written out."""
    h = pooled_in @ conn.pooling.out.weight.T + conn.pooling.out.bias
    u = h @ conn.projector.up.weight.T
    size = u.shape[-1] // 2
    value, gate = u[..., :size], u[..., size:]
    return (gate * torch.sigmoid(gate) * value) @ conn.projector.down.weight.T


@torch.no_grad()
def test_mean_pooling_equals_the_hand_computed_window_mean():
    cfg, conn = _config("mean"), _connector("mean")
    g = cfg.vision.grid  # 27: the last row and column of windows are half zero padding
    feats = torch.randn(1, 1, g * g, conn.pad_embed.shape[1], generator=torch.Generator().manual_seed(0))
    out = conn(feats, torch.ones(1, 1, g * g))  # (1, 1, 196, text hidden)
    side = math.ceil(g / 2)
    assert out.shape == (1, 1, side * side, cfg.text.hidden_size)
    f = feats[0, 0].view(g, g, -1)
    windows = {
        (0, 0): f[0, 0] + f[0, 1] + f[1, 0] + f[1, 1],
        (5, 7): f[10, 14] + f[10, 15] + f[11, 14] + f[11, 15],
        (0, side - 1): f[0, g - 1] + f[1, g - 1],  # two zero-padded members still count
        (side - 1, side - 1): f[g - 1, g - 1],  # three zero-padded members
    }
    for (r, c), total in windows.items():
        expected = _by_hand(conn, total / 4)
        assert torch.allclose(out[0, 0, r * side + c], expected, rtol=1e-5, atol=1e-5), (r, c)


@torch.no_grad()
def test_no_pooling_projects_each_patch_on_its_own():
    cfg, conn = _config("none"), _connector("none")
    g = cfg.vision.grid
    feats = torch.randn(1, 1, g * g, conn.pad_embed.shape[1], generator=torch.Generator().manual_seed(0))
    masks = torch.ones(1, 1, g * g)
    masks[0, 0, 5] = 0  # an uncovered patch gets pad_embed[0]
    out = conn(feats, masks)
    assert out.shape == (1, 1, g * g, cfg.text.hidden_size)
    for k in (0, 100, g * g - 1):
        assert torch.allclose(out[0, 0, k], _by_hand(conn, feats[0, 0, k]), rtol=1e-5, atol=1e-5), k
    expected = _by_hand(conn, feats[0, 0, 5] + conn.pad_embed[0])
    assert torch.allclose(out[0, 0, 5], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mean", "none"])
@torch.no_grad()
def test_save_and_load_round_trip(kind, tmp_path):
    model, processor = build_random_model("tiny", seed=3, config=_config(kind))
    save_pretrained(model, tmp_path, processor=processor)
    loaded, proc2 = jvlm.load(tmp_path, dtype="fp32")
    c = loaded.cfg.connector
    assert (c.pooling_type, c.pooling_h, c.pooling_w) == (kind, *((1, 1) if kind == "none" else (2, 2)))
    assert proc2.image_config.tokens_per_crop == processor.image_config.tokens_per_crop
    before, after = model.state_dict(), loaded.state_dict()
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    batch = proc2(text=PROMPT, images=[_img(200, 300)], max_crops=1)
    assert torch.equal(batch["input_ids"], processor(text=PROMPT, images=[_img(200, 300)], max_crops=1)["input_ids"])
    assert torch.equal(loaded(**batch).logits, model(**batch).logits)

    # A variant's weights do not load under a config that names another pooling type.
    path = tmp_path / "config.json"
    d = json.loads(path.read_text())
    d["vision_config"]["vl_connector_config"]["pooling_type"] = "attention_meanq"
    d["vision_config"]["vl_connector_config"]["pooling_h"] = d["vision_config"]["vl_connector_config"]["pooling_w"] = 2
    d["jvlm_image_processing"]["pooling_h"] = d["jvlm_image_processing"]["pooling_w"] = 2
    path.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"missing: .*pooling\.kv_w\.weight"):
        jvlm.load(tmp_path, dtype="fp32")


def test_unsupported_pooling_type_and_window_are_clear_errors():
    cfg = JinaVLMConfig.preset("tiny")
    cfg.connector.pooling_type = "max"
    with pytest.raises(ValueError, match=r"pooling_type 'max' is not supported; use one of .*'mean'.*'none'"):
        cfg.validate()
    with pytest.raises(ValueError, match=r"pooling_type 'max' is not supported"):
        JinaVLMForConditionalGeneration(cfg)
    with pytest.raises(ValueError, match=r"pooling_type 'max' is not supported"):
        VisionLanguageConnector(cfg)  # built without a validated config, too

    cfg = JinaVLMConfig.preset("tiny")
    cfg.connector.pooling_type = "none"  # still the 2x2 window
    with pytest.raises(ValueError, match=r"'none' keeps every patch, so it needs pooling_h = pooling_w = 1"):
        cfg.validate()

    # The 1x1 window itself is legal for the other pooling types.
    for kind in ("mean", "attention_meanq"):
        cfg = JinaVLMConfig.preset("tiny")
        cfg.connector.pooling_type = kind
        for part in (cfg.connector, cfg.image):
            part.pooling_h = part.pooling_w = 1
        assert cfg.validate().image.tokens_per_crop == 27 * 27


@pytest.mark.parametrize("pooling_type", POOLING_TYPES)
def test_cost_report_counts_the_configured_pooling_weights(pooling_type):
    # `jvlm efficiency` must describe the connector the config builds, not always the
    # attention pooling: its weight count equals the pooling module's matrices.
    from jvlm.efficiency import efficiency_report

    cfg = _config(pooling_type)
    conn = VisionLanguageConnector(cfg)
    matrices = sum(p.numel() for name, p in conn.pooling.named_parameters() if name.endswith("weight"))
    report = efficiency_report(640, 480, cfg)
    assert report["params"]["pooling"] == matrices
    if pooling_type == "mean":  # same tokens as attention pooling, minus the q/k/v work
        attention = efficiency_report(640, 480, _config("attention_meanq"))
        assert report["tokens"] == attention["tokens"]
        assert report["prefill_flops"]["real"] < attention["prefill_flops"]["real"]
