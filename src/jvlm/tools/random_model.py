"""Random-weight models in the exact official layout, for tests, benchmarks and demos.

``write_random_checkpoint(DIR, "tiny")`` writes a complete model folder (config.json,
model.safetensors, tokenizer files, preprocessor_config.json) that every entry point can
load. The ``tiny`` preset uses the project's small self-trained tokenizer; ``jina-vlm`` uses
the real Qwen vocabulary (needs the rank file from the ``qwen-agent`` wheel).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from jvlm.config import JinaVLMConfig
from jvlm.loading import save_pretrained
from jvlm.resolve import random_model_notice, tiny_random_dir

log = logging.getLogger(__name__)
from jvlm.model.vlm import JinaVLMForConditionalGeneration, init_random


def build_tokenizer(preset: str):
    from jvlm.tools import tokenizers

    return tokenizers.build_tiny_tokenizer() if preset == "tiny" else tokenizers.build_qwen_tokenizer()


def build_random_model(preset: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32,
                       config: JinaVLMConfig | None = None):
    """``(model, processor)`` with deterministic random weights."""
    from jvlm.processing.processor import JinaVLMProcessor

    cfg = (config or JinaVLMConfig.preset(preset)).copy()
    tok = build_tokenizer(preset)
    ids = _tokenizer_ids(tok)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = ids["bos"], ids["eos"], ids["pad"]
    cfg.image_token_index = ids["image"]
    model = init_random(JinaVLMForConditionalGeneration(cfg), seed).to(dtype).eval()
    processor = JinaVLMProcessor(tok, cfg)
    model.use_token_ids(processor.token_ids)
    return model, processor


def write_random_checkpoint(folder: str | Path, preset: str = "tiny", seed: int = 0,
                            dtype: torch.dtype = torch.float32, max_shard_bytes: int | None = None,
                            config: JinaVLMConfig | None = None) -> Path:
    model, processor = build_random_model(preset, seed, dtype, config)
    save_pretrained(model, folder, processor=processor, max_shard_bytes=max_shard_bytes)
    return Path(folder)


def _tokenizer_ids(tok) -> dict[str, int]:
    from jvlm.processing.text import special_token_ids

    t = special_token_ids(tok)
    return {"bos": t.bos, "eos": t.eos[0], "pad": t.pad, "image": t.image}


def ensure_tiny_random() -> Path:
    """The placeholder model folder, written once (atomically, so an interrupted first run
    never leaves a half-written folder behind)."""
    folder = tiny_random_dir()
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("writing the tiny random model to %s", folder)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-random-", dir=folder.parent))
    try:
        write_random_checkpoint(tmp, "tiny", seed=0)
        (tmp / "RANDOM_WEIGHTS.txt").write_text(random_model_notice() + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
