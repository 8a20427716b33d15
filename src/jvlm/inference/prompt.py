"""From a question and its images to an engine ``Request``, reusing cached image work.

This is the seam between the processor (text, chat template, image blocks) and the engine
(token ids). An image whose features are in the ``FeatureCache`` is neither decoded nor
tiled again: its cached layout is enough to lay out its token block, and its features go
straight to the engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from jvlm.errors import InvalidImageError, PromptError
from jvlm.inference.feature_cache import (
    FeatureCache,
    image_cache_key,
    image_content_hash,
)
from jvlm.inference.request import ImageInput, Request, SamplingParams, check_budget
from jvlm.processing.image import ProcessedImage, image_input_idx

log = logging.getLogger(__name__)

MAX_CROPS_LIMIT = 64  # beyond this a single image would outgrow any useful context


def read_image_source(src) -> Any:
    """Paths become their bytes (hashed once, decoded once); other inputs pass through."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            what = "is a directory, not an image file" if path.is_dir() else "does not exist"
            raise InvalidImageError(f"image path {str(path)!r} {what}; pass the path of an image file")
        return path.read_bytes()
    return src


def check_max_crops(max_crops: int | None) -> None:
    if max_crops is not None and not 1 <= int(max_crops) <= MAX_CROPS_LIMIT:
        raise PromptError(f"max_crops must be between 1 and {MAX_CROPS_LIMIT}, got {max_crops}")


def prepare_image(processor, src, max_crops: int | None = None,
                  feature_cache: FeatureCache | None = None) -> tuple[ProcessedImage, ImageInput]:
    """Processed image (for the processor's token layout) and its engine input, minus positions.

    On a cache hit the returned ``ProcessedImage`` carries zero pixels of the right shape (the
    processor only reads their count) and the ``ImageInput`` carries the cached features.
    """
    check_max_crops(max_crops)
    src = read_image_source(src)
    cfg = processor.image_config
    key = image_cache_key(image_content_hash(src), cfg, max_crops)
    hit = feature_cache.get(key) if feature_cache is not None else None
    if hit is not None and hit.layout is not None:
        layout = hit.layout
        n_patch, patch_dim = cfg.grid * cfg.grid, cfg.patch_size * cfg.patch_size * 3
        zeros = np.broadcast_to(np.float32(0), (layout.n_crops, n_patch, patch_dim))
        processed = ProcessedImage(crops=zeros, masks=np.ones((layout.n_crops, n_patch), np.float32),
                                   image_input_idx=image_input_idx(layout, cfg), layout=layout)
        return processed, ImageInput(image_input_idx=processed.image_input_idx, features=hit.features,
                                     cache_key=key, layout=layout, n_tokens=layout.n_block_tokens,
                                     tiling=layout.tiling)
    processed = processor.process_image(src, max_crops)
    layout = processed.layout
    return processed, ImageInput(image_input_idx=processed.image_input_idx, crops=processed.crops,
                                 masks=processed.masks, cache_key=key if feature_cache is not None else None,
                                 layout=layout, n_tokens=layout.n_block_tokens, tiling=layout.tiling)


def user_message(prompt: str, n_images: int) -> list[dict]:
    """One user turn: the images first, then the question (the layout the model was trained on)."""
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]


def build_request(processor, prompt: str | list[dict], images=(), *, max_crops: int | None = None,
                  params: SamplingParams | None = None, feature_cache: FeatureCache | None = None,
                  context_length: int | None = None, request_id: str | None = None) -> Request:
    """A ``Request`` for a question (a string, wrapped in one user turn) or a conversation
    (Hugging Face messages; its image parts must match ``images`` in number and order).

    The token budget is checked here, before any image reaches the vision tower.
    """
    params = params or SamplingParams()
    images = list(images)
    if isinstance(prompt, str):
        messages = user_message(prompt, len(images))
    else:
        messages = prompt
    context = context_length or processor.model_max_length
    # typed control tokens stay text; text that cannot fit is refused before tokenizing
    prompt_ids = processor.chat_ids(messages, add_generation_prompt=True, context_length=context)
    prepared = [prepare_image(processor, img, max_crops, feature_cache) for img in images]
    enc = processor.encode(prompt_ids, processed=[p for p, _ in prepared])
    inputs = []
    row = 0
    for _, im in prepared:  # the processor concatenates every image's crops; split them back
        im.image_input_idx = enc.image_input_idx[row:row + im.n_crops]
        row += im.n_crops
        inputs.append(im)
    check_budget(len(enc.input_ids), enc.n_image_tokens, params.max_new_tokens, context)
    req = Request(prompt_ids=list(enc.input_ids), images=inputs, params=params)
    if request_id is not None:
        req.request_id = request_id
    return req
