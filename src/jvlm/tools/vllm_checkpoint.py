"""A tiny random checkpoint for trying and testing the vLLM plugin without the released weights.

``write_vllm_test_checkpoint(DIR)`` writes the ``tiny`` preset in the official layout with two
changes that a plugin test needs:

- decoder ``head_dim`` 32: vLLM's CPU attention kernel takes head sizes 32, 64, 80, 96, 112,
  128... but not the ``tiny`` preset's 16;
- a connector whose features are on the scale of the text embeddings (fan-in initialisation,
  projector output x30). With the flat random start the features are ~1e-7 and every image
  gets the same answer, so a test could not tell a misplaced feature from a correct one; here
  different images give different greedy tokens.

    python -m jvlm.tools.vllm_checkpoint /tmp/jvlm-tiny     # then: --model /tmp/jvlm-tiny
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

FEATURE_GAIN = 30.0  # measured: x10 still answers every test image alike, x30 does not


def vllm_test_config():
    from jvlm.config import JinaVLMConfig

    cfg = JinaVLMConfig.preset("tiny")
    cfg.text.head_dim = 32
    return cfg.validate()


def write_vllm_test_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint folder (config, safetensors, tokenizer, template) and return it."""
    from jvlm.loading import save_pretrained
    from jvlm.model.vlm import init_connector_fan_in
    from jvlm.tools.random_model import build_random_model

    model, processor = build_random_model("tiny", seed, config=vllm_test_config())
    init_connector_fan_in(model, seed)
    with torch.no_grad():
        model.model.vision_model.vl_connector.projector.down.weight.mul_(FEATURE_GAIN)
    save_pretrained(model, folder, processor=processor)
    return Path(folder)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m jvlm.tools.vllm_checkpoint DIR")
    print(write_vllm_test_checkpoint(sys.argv[1]))
