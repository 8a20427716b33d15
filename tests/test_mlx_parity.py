"""Parity of the PyTorch model with mlx-vlm's independent MLX port (``mlx_vlm.models.jina_vlm``).

Two implementations written from different readings of the official code must agree on the
maths when given the same weights and the same preprocessed inputs. The tiny random model is
converted with ``layouts.mlx.official_to_mlx`` and loaded *strictly* into the port's own module
tree, so the MLX key table is checked against the real port too.

The port's known deviations sit in its processor (bicubic resize, hard-coded token ids, no
BOS, no last-tile mask quirk) and are bypassed, not tolerated: both models get the very same
crops, masks (including the official -1 row and partial/zero patches), token ids and
``image_input_idx``. The port's decoder has no text q/k/v bias, so ours are zeroed here (see
docs/parity.md). Negative controls show that a swapped value/gate half or a reversed tap order
is caught by these tolerances.

Install for CI (no torch is pulled in): ``pip install 'mlx[cpu]==0.32.4' requests`` then
``pip install --no-deps mlx-vlm==0.7.10``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

mx = pytest.importorskip("mlx.core", reason="mlx is not installed: pip install 'mlx[cpu]'")
port = pytest.importorskip(
    "mlx_vlm.models.jina_vlm",
    reason="mlx-vlm is not installed: pip install --no-deps mlx-vlm (plus requests)",
)

from jvlm.config import JinaVLMConfig
from jvlm.layouts.mlx import official_to_mlx
from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random
from jvlm.processing.image import image_block_ids, image_input_idx, image_layout

# fp32 on both sides: anything above this, relative to the reference's largest value, is a
# difference in the maths, not rounding (measured values are in docs/parity.md).
REL_TOL = 1e-4
# A negative control must miss by far more than the tolerance, or the tolerance is too loose
# to notice that kind of mistake.
CONTROL_FACTOR = 100

SEED = 0
# Weight scale of the random model. At init_random's default 0.02 the pre-activations are so
# small that silu is almost linear: silu(gate)*value ~ silu(value)*gate, so a value/gate swap
# moved the connector output by only 4e-3 (relative) and the connector output itself was ~1e-6.
# At 0.1 every stage works at O(0.1-10) values and a swap moves the outputs by ~0.7.
WEIGHT_STD = 0.1
# Structural ids of the tiny vocabulary: rows 0..3 of new_embedding, in the order of spec §2
# (the tiny test tokenizer puts them there). BOS is <|endoftext|> of the tiny tokenizer.
BOS = 1021


def _ids(cfg: JinaVLMConfig) -> dict[str, int]:
    base = cfg.text.base_rows
    return {"im_start": base, "im_end": base + 1, "im_patch": base + 2, "im_col": base + 3}


def _rel_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-12))


# ------------------------------------------------------------------------------ builders
@pytest.fixture(scope="module")
def cfg() -> JinaVLMConfig:
    return JinaVLMConfig.preset("tiny")


@pytest.fixture(scope="module")
def ours(cfg):
    model = init_random(JinaVLMForConditionalGeneration(cfg), seed=SEED, std=WEIGHT_STD).eval()
    with torch.no_grad():
        # The port's decoder qkv has no bias (nor does the MLX conversion): compare the maths
        # on the weights both can hold.
        for layer in model.model.language_model.layers:
            for b in (layer.attn.q_b, layer.attn.k_b, layer.attn.v_b):
                b.zero_()
    model.model.im_patch_token_id = _ids(cfg)["im_patch"]  # turns on our slot-count check
    return model


@pytest.fixture(scope="module")
def mlx_weights(ours) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in official_to_mlx(ours.state_dict()).items()}


def _port_config(cfg: JinaVLMConfig, vit_layers: tuple[int, ...] | None = None):
    """The same tiny dims through the port's own config classes, with our token ids."""
    v, c, t = cfg.vision, cfg.connector, cfg.text
    # The port's pooling attention borrows the ViT's heads/head_dim: only equal ones can match.
    assert (c.n_heads, c.head_dim) == (v.n_heads, v.head_dim)
    vision = port.VisionConfig(
        hidden_size=v.hidden_size, num_hidden_layers=v.n_layers, num_attention_heads=v.n_heads,
        head_dim=v.head_dim, patch_size=v.patch_size, image_size=v.image_size, num_channels=v.n_channels,
        intermediate_size=v.mlp_size, layer_norm_eps=v.norm_eps, use_bias=v.norm_bias,
        activation=v.activation, vit_layers=tuple(vit_layers or v.vit_layers), output_size=t.hidden_size,
        pooling_h=c.pooling_h, pooling_w=c.pooling_w, connector_hidden_size=c.projector_size,
    )
    text = port.TextConfig(
        hidden_size=t.hidden_size, num_hidden_layers=t.n_layers, num_attention_heads=t.n_heads,
        num_key_value_heads=t.n_kv_heads, head_dim=t.head_dim, vocab_size=t.base_rows,
        additional_vocab_size=t.additional_vocab_size, intermediate_size=t.mlp_size,
        rms_norm_eps=t.norm_eps, rope_theta=t.rope_theta, max_position_embeddings=t.max_sequence_length,
        tie_word_embeddings=False,
    )
    ids = _ids(cfg)
    placeholder = t.base_rows + 4  # <|image|>: new_embedding row 4
    # The port's defaults are 151665-151668; its forward never reads them, but set ours anyway.
    return port.ModelConfig(
        text_config=text, vision_config=vision, vocab_size=t.base_rows, bos_token_id=BOS,
        eos_token_id=BOS, pad_token_id=BOS, image_token_index=placeholder,
        image_token_id=placeholder, image_start_token_id=ids["im_start"],
        image_end_token_id=ids["im_end"], image_patch_token_id=ids["im_patch"],
        image_column_token_id=ids["im_col"],
    )


def _build_port(cfg: JinaVLMConfig, weights: dict[str, np.ndarray], vit_layers=None):
    model = port.Model(_port_config(cfg, vit_layers))
    loaded = model.sanitize({k: mx.array(v) for k, v in weights.items()})  # lm_head -> language_model.lm_head
    model.load_weights(list(loaded.items()), strict=True)  # every name and shape must match
    model.eval()
    return model


@pytest.fixture(scope="module")
def theirs(cfg, mlx_weights):
    return _build_port(cfg, mlx_weights)


@pytest.fixture(scope="module")
def inputs(cfg) -> dict[str, np.ndarray]:
    """One image laid out by our processor (1x2 tiles + thumbnail), random crops, one batch-
    padding crop, and text around the image block. Masks cover every pad_embed case: all-real,
    zero ("full padding"), fractional and the official -1 row ("partial padding")."""
    rng = np.random.default_rng(SEED)
    ic, v = cfg.image, cfg.vision
    layout = image_layout(378, 600, ic)  # tiling (1, 2): 3 crops, 532 feature tokens
    block = image_block_ids(layout, **_ids(cfg))
    before = rng.integers(0, BOS, size=9)
    after = rng.integers(0, BOS, size=7)
    input_ids = np.concatenate([[BOS], before, block, after]).astype(np.int64)  # (S,)
    offset = 1 + len(before)
    idx = image_input_idx(layout, ic)  # (3, 196), relative to the block; -10000 = dropped overlap
    idx = np.where(idx >= 0, idx + offset, idx)
    # Batch padding crop: all -1 pixels (zeroed by both ViTs), -1 positions (skipped by both merges).
    idx = np.concatenate([idx, np.full((1, idx.shape[1]), -1)])  # (4, 196)

    n_crops, n_patch = layout.n_crops + 1, v.n_patches
    images = rng.uniform(-1.0, 1.0, size=(n_crops, n_patch, v.patch_dim)).astype(np.float32)  # (4, 729, 588)
    images[-1] = -1.0
    masks = np.ones((n_crops, n_patch), dtype=np.float32)  # (4, 729)
    masks[1, :27] = 0.0  # first patch row of tile 0: full padding -> pad_embed[0]
    masks[1, 27:54] = 0.5  # second row: partial -> pad_embed[1]
    masks[2] = -1.0  # the official last-tile quirk -> pad_embed[1] everywhere
    masks[3] = -1.0  # batch padding, as our collate pads masks
    return {
        "input_ids": input_ids[None], "images": images[None], "image_masks": masks[None],
        "image_input_idx": idx[None].astype(np.int64),
    }


def _torch(inputs):
    return {k: torch.from_numpy(v) for k, v in inputs.items()}


def _mx(inputs):
    return {k: mx.array(v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in inputs.items()}


# ------------------------------------------------------------------------ measurements
# Each stage is (ours, port) over the same inputs. The ViT stage takes the real crops only:
# the padding crop's all -1 zeroing happens after get_features in the port, so it is compared
# at the connector stage.
def _ours_vit(model, inputs) -> np.ndarray:
    with torch.no_grad():
        real = torch.from_numpy(inputs["images"][:, :-1])  # (1, 3, 729, 588)
        return model.model.vision_model.encode(real)[0].numpy()  # (3, 729, 2*W), taps concatenated


def _port_vit(model, inputs) -> np.ndarray:
    return np.array(model.vision_model.get_features(mx.array(inputs["images"][0, :-1])))


def _ours_connector(model, inputs) -> np.ndarray:
    t = _torch(inputs)
    with torch.no_grad():
        return model.model.image_features(t["images"], t["image_masks"]).numpy()  # (1, 4, 196, hidden)


def _port_connector(model, inputs) -> np.ndarray:
    m = _mx(inputs)
    return np.array(model.get_image_features(m["images"], m["image_masks"]))


def _ours_logits(model, inputs) -> np.ndarray:
    t = _torch(inputs)
    with torch.no_grad():
        return model(t["input_ids"], images=t["images"], image_masks=t["image_masks"],
                     image_input_idx=t["image_input_idx"]).logits.numpy()  # (1, S, vocab)


def _port_logits(model, inputs, image_features: np.ndarray | None = None) -> np.ndarray:
    """The port's whole path (ViT, connector, merge, decoder), or from given image features."""
    m = _mx(inputs)
    cached = None if image_features is None else mx.array(image_features)
    out = model(m["input_ids"], pixel_values=m["images"], image_masks=m["image_masks"],
                image_input_idx=m["image_input_idx"], cached_image_features=cached)
    return np.array(out.logits)


STAGES = {
    "vit_features": (_ours_vit, _port_vit),
    "connector": (_ours_connector, _port_connector),
    "logits": (_ours_logits, _port_logits),
}


@pytest.fixture(scope="module")
def reference(ours, inputs) -> dict[str, np.ndarray]:
    """Our output of every stage, computed once for the parity tests and the controls."""
    return {stage: fn(ours, inputs) for stage, (fn, _) in STAGES.items()}


# ------------------------------------------------------------------------------- tests
def test_converted_weights_fill_the_port_exactly(theirs, mlx_weights):
    """Strict loading already checked names and shapes; the values must be ours, bit for bit."""
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(theirs.parameters()))
    assert len(params) == len(mlx_weights)
    for name, value in mlx_weights.items():
        got = params["language_model.lm_head.weight" if name == "lm_head.weight" else name]
        assert np.array_equal(np.array(got), value), name


@pytest.mark.parametrize("stage", list(STAGES))
def test_port_matches_within_fp32_tolerance(stage, theirs, inputs, reference):
    a, b = reference[stage], STAGES[stage][1](theirs, inputs)
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    assert _rel_diff(a, b) <= REL_TOL, f"{stage}: max |ours - port| / max |ours| = {_rel_diff(a, b):.2e}"


def test_image_features_are_added_not_written_over_the_patch_embeddings(theirs, inputs, reference):
    """Both merges *add* features onto the <im_patch> embeddings (official): a port that
    replaced them would differ from ours by exactly the token embedding at those positions."""
    m = _mx(inputs)
    feats = reference["connector"]  # (1, 4, 196, hidden); equal to the port's by the parity test
    merged = np.array(theirs.get_input_embeddings(
        m["input_ids"], m["images"], image_masks=m["image_masks"], image_input_idx=m["image_input_idx"],
        cached_image_features=mx.array(feats)).inputs_embeds)[0]  # (S, hidden)
    plain = np.array(theirs.language_model.embedding(m["input_ids"]))[0]
    feats = feats[0]  # (4, 196, hidden)
    idx = inputs["image_input_idx"][0].reshape(-1)
    keep = idx >= 0
    np.testing.assert_allclose(merged[idx[keep]], plain[idx[keep]] + feats.reshape(-1, feats.shape[-1])[keep],
                               rtol=0, atol=1e-6)
    others = np.setdiff1d(np.arange(len(merged)), idx[keep])
    assert np.array_equal(merged[others], plain[others])


def _swap_halves(w: np.ndarray) -> np.ndarray:
    half = w.shape[0] // 2
    return np.concatenate([w[half:], w[:half]])  # [gate | value] instead of [value | gate]


@pytest.mark.parametrize("control", ["projector value/gate swapped", "decoder MLP value/gate swapped",
                                     "tap order reversed"])
def test_negative_controls_are_caught(control, cfg, mlx_weights, inputs, reference):
    """Each mistake a port could make must land far outside the tolerance of the parity test,
    or passing that test would prove nothing about it."""
    weights, vit_layers, kwargs = dict(mlx_weights), None, {}
    if control == "projector value/gate swapped":
        name = "vl_connector.projector.gate_up.weight"
        weights[name] = _swap_halves(weights[name])
        stage = "connector"
    elif control == "decoder MLP value/gate swapped":
        for i in range(cfg.text.n_layers):
            name = f"language_model.layers.{i}.ffn.gate_up.weight"
            weights[name] = _swap_halves(weights[name])
        stage, kwargs = "logits", {"image_features": reference["connector"]}  # the ViT is not at stake
    else:
        vit_layers = tuple(reversed(cfg.vision.vit_layers))
        stage = "vit_features"
    a, b = reference[stage], STAGES[stage][1](_build_port(cfg, weights, vit_layers), inputs, **kwargs)
    assert _rel_diff(a, b) > CONTROL_FACTOR * REL_TOL, f"{control}: only {_rel_diff(a, b):.2e} apart"


def test_nonzero_text_qkv_bias_is_refused_by_the_port_not_lost(cfg):
    """The port cannot hold text q/k/v biases; the conversion keeps a non-zero one so that
    loading fails loudly instead of silently changing the logits."""
    model = init_random(JinaVLMForConditionalGeneration(cfg), seed=SEED + 1)
    converted = official_to_mlx(model.state_dict())
    assert "language_model.layers.0.attn.qkv.bias" in converted
    with pytest.raises(ValueError, match="qkv.bias"):
        _build_port(cfg, {k: v.detach().numpy() for k, v in converted.items()})


@pytest.mark.parametrize("hw", [(378, 378), (378, 600), (100, 1200), (200, 1200), (910, 1176), (1400, 300)])
def test_port_processor_lays_out_tokens_like_ours(hw, cfg):
    """Same tiling, crop count, token block and image_input_idx once the port is given our ids;
    its masks are all 1.0 (no -1 row for the last tile), the documented difference."""
    ids = _ids(cfg)
    proc = port.ImageProcessor(patch_token_id=ids["im_patch"], start_token_id=ids["im_start"],
                               end_token_id=ids["im_end"], column_token_id=ids["im_col"])
    out = proc.process_image(np.zeros((*hw, 3), dtype=np.float32))
    layout = image_layout(*hw, cfg.image)
    assert out["pixel_values"].shape == (layout.n_crops, cfg.vision.n_patches, cfg.vision.patch_dim)
    assert np.array_equal(out["image_tokens"], image_block_ids(layout, **ids))
    assert np.array_equal(out["image_input_idx"], image_input_idx(layout, cfg.image))
    assert (out["image_masks"] == 1.0).all()
    assert port.ImageProcessor().patch_token_id == 151665  # its default: a Qwen3 text token
