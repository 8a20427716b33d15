"""Training from scratch starts with image features of usable size.

With a flat N(0, 0.02) init the connector's five matrices and gated product shrink the
features to ~1e-4, the decoder sees no image and the vision encoder gets no gradient; the
demo model trained that way ignored the pixels. ``init_connector_fan_in`` fixes the start.
"""

from __future__ import annotations

import numpy as np
import torch

from jvlm.config import JinaVLMConfig
from jvlm.model.vlm import (
    JinaVLMForConditionalGeneration,
    init_connector_fan_in,
    init_random,
)
from jvlm.processing.image import preprocess_image


def _feature_rms(model: JinaVLMForConditionalGeneration, cfg: JinaVLMConfig) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    images = [preprocess_image(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), cfg.image) for _ in range(2)]
    crops = torch.from_numpy(np.stack([im.crops for im in images]))
    masks = torch.from_numpy(np.stack([im.masks for im in images]))
    with torch.no_grad():
        feats = model.model.image_features(crops, masks).float()
    return feats.pow(2).mean().sqrt().item(), (feats[0] - feats[1]).pow(2).mean().sqrt().item()


def test_fan_in_connector_gives_unit_scale_image_dependent_features():
    cfg = JinaVLMConfig.preset("jvlm-demo")  # the preset trained from scratch
    model = init_random(JinaVLMForConditionalGeneration(cfg), seed=0).float().eval()
    flat_rms, _ = _feature_rms(model, cfg)
    before = {n: p.clone() for n, p in model.named_parameters()}
    init_connector_fan_in(model, seed=0)
    rms, between = _feature_rms(model, cfg)
    assert flat_rms < 1e-2, "the flat init is the small-feature case this guards against"
    assert 0.05 < rms < 5.0, rms
    assert between > 0.01 * rms, "features must differ between different images"
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".vl_connector." in n for n in changed), "only connector matrices are re-drawn"
    assert not any("pad_embed" in n or n.endswith(("bias", "_b")) for n in changed)


def test_rescale_sets_the_image_embedding_size_and_changes_nothing_else(tmp_path):
    """The demo recipe's rescale step: only the projector's last matrix changes, and the
    image embeddings come out at the asked RMS (measured on the same fixed images)."""
    from safetensors.torch import load_file

    from jvlm_demo.demo import rescale_image_embeddings, write_initial_model

    start = write_initial_model(tmp_path / "init")
    before, after = rescale_image_embeddings(start, tmp_path / "scaled", target_rms=0.05, n_images=14)
    assert before > 0.1 and abs(after - 0.05) < 1e-3
    a, b = load_file(str(start / "model.safetensors")), load_file(str(tmp_path / "scaled" / "model.safetensors"))
    changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert len(changed) == 1 and changed[0].endswith("projector.down.weight")
    assert torch.allclose(b[changed[0]], a[changed[0]] * (0.05 / before), rtol=1e-5)
