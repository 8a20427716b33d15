"""vLLM's multimodal processing for Jina-VLM, done by ``jvlm.processing`` (one implementation).

vLLM tokenizes the rendered chat itself; for each image this module then

1. runs ``JinaVLMProcessor.process_image`` (smart resize, overlap-and-resize tiling, thumbnail,
   patchify, the last-tile mask quirk) -- the crops, masks and ``image_input_idx`` jvlm uses;
2. replaces that image's ``<|image|>`` placeholder with its token block from
   ``JinaVLMProcessor.image_block`` (thumbnail grid, then the tiles' global grid), marking the
   ``<im_patch>`` tokens as the positions that receive image features. The block length is
   ``image_layout(...).n_block_tokens``, the same function jvlm's own processor and model
   check against, so vLLM schedules exactly the tokens jvlm would.

BOS: jvlm's processor prepends it to every prompt. vLLM renders chat prompts from a template
and does not add special tokens, so the plugin hands vLLM the model folder's template with the
BOS in front (``jvlm_chat_template``); see ``jvlm.integrations.vllm.hf_processor``.

``mm_processor_kwargs={"max_crops": N}`` (per request, or ``--mm-processor-kwargs`` at launch)
changes the tile budget as ``max_crops`` does for ``jvlm infer``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)

from jvlm.errors import PromptError
from jvlm.inference.prompt import check_max_crops
from jvlm.processing.image import image_block_ids, image_layout
from jvlm.processing.processor import JinaVLMProcessor

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def load_processor(model: str, revision: str | None = None) -> JinaVLMProcessor:
    """jvlm's processor (tokenizer, image settings, special ids) for vLLM's ``--model``: a folder,
    or a Hub repository whose non-weight files vLLM fetches into its cache."""
    from vllm.transformers_utils.repo_utils import get_non_weight_snapshot_path

    return JinaVLMProcessor.from_pretrained(get_non_weight_snapshot_path(model, revision=revision))


def _max_crops(info: BaseProcessingInfo, kwargs: Mapping[str, object]) -> int:
    """The tile budget: request ``mm_processor_kwargs`` over launch ``--mm-processor-kwargs``
    over the folder's ``max_crops``."""
    merged = info.ctx.get_merged_mm_kwargs(kwargs)
    unknown = sorted(k for k, v in merged.items() if k != "max_crops" and v not in (None, {}))
    if unknown:
        raise PromptError(f"mm_processor_kwargs {unknown} are not understood; Jina-VLM's processor takes "
                          "only max_crops (tiles per image)")
    value = merged.get("max_crops")
    if value is None:
        return info.get_hf_processor().image_config.max_crops
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"max_crops must be an integer, got {value!r}")
    check_max_crops(value)  # PromptError (a ValueError): vLLM answers 400
    return value


class JinaVLMProcessingInfo(BaseProcessingInfo):
    def get_hf_processor(self, **kwargs: object) -> JinaVLMProcessor:
        config = self.ctx.model_config
        return load_processor(config.model, config.tokenizer_revision)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_image_size_with_most_features(self) -> tuple[int, int]:
        """(height, width) of the image whose block is longest under the launch-time crop budget:
        the tiled grid that fills it, at exactly its stretched size (so the smart resize keeps it)."""
        cfg = self.get_hf_processor().image_config
        budget = _max_crops(self, {})
        best, best_hw = -1, (cfg.crop_size, cfg.crop_size)
        for rows in range(1, budget + 1):
            for cols in range(1, budget // rows + 1):
                hw = (rows * cfg.window_px + cfg.overlap_px, cols * cfg.window_px + cfg.overlap_px)
                n = image_layout(*hw, cfg, budget).n_block_tokens
                if n > best:
                    best, best_hw = n, hw
        return best_hw


class JinaVLMDummyInputsBuilder(BaseDummyInputsBuilder[JinaVLMProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        placeholder = self.info.get_hf_processor().tokenizer.convert_ids_to_tokens(
            self.info.get_hf_processor().token_ids.image)
        return placeholder * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        h, w = self.info.get_image_size_with_most_features()
        overrides = mm_options.get("image") if mm_options else None
        return {"image": self._get_dummy_images(width=w, height=h, num_images=mm_counts.get("image", 0),
                                                overrides=overrides)}


class JinaVLMMultiModalProcessor(BaseMultiModalProcessor[JinaVLMProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """Every image through jvlm's image pipeline; crops of all images concatenated."""
        processor = self.info.get_hf_processor()
        max_crops = _max_crops(self.info, hf_kwargs)
        images = hf_data.get("images") or []
        processed = [processor.process_image(img, max_crops) for img in images]
        if not processed:
            return BatchFeature({})
        return BatchFeature({
            "images": torch.from_numpy(np.concatenate([p.crops for p in processed])),  # (sum crops, P, 588)
            "image_masks": torch.from_numpy(np.concatenate([p.masks for p in processed])),  # (sum crops, P)
            # relative to the start of the image's own block; (sum crops, tokens per crop)
            "image_input_idx": torch.from_numpy(np.concatenate([p.image_input_idx for p in processed])),
            "num_crops": torch.tensor([p.layout.n_crops for p in processed]),
            # (n_images, 3): height and width as decoded, and the crop budget -- what image_layout needs
            "image_layout": torch.tensor([(*p.layout.input_hw, max_crops) for p in processed]),
        })

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        num_crops = hf_inputs.get("num_crops", torch.empty(0, dtype=torch.long))
        return {
            "images": MultiModalFieldConfig.flat_from_sizes("image", num_crops),
            "image_masks": MultiModalFieldConfig.flat_from_sizes("image", num_crops),
            "image_input_idx": MultiModalFieldConfig.flat_from_sizes("image", num_crops),
            "num_crops": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "image_layout": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
        }

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        processor = self.info.get_hf_processor()
        ids = processor.token_ids

        def block(item_idx: int) -> PromptUpdateDetails:
            h, w, max_crops = (int(v) for v in out_mm_kwargs["image"][item_idx]["image_layout"].data.tolist())
            layout = image_layout(h, w, processor.image_config, max_crops)
            tokens = _block_ids(processor, layout)
            # Only <im_patch> positions take a feature; <im_start>/<im_col>/<im_end> stay text.
            return PromptUpdateDetails.select_token_id(tokens, embed_token_id=ids.im_patch)

        return [PromptReplacement(modality="image", target=[ids.image], replacement=block)]


def _block_ids(processor: JinaVLMProcessor, layout) -> list[int]:
    """The image block jvlm's processor splices in (``JinaVLMProcessor.image_block``)."""
    t = processor.token_ids
    return [int(x) for x in image_block_ids(layout, im_start=t.im_start, im_end=t.im_end, im_patch=t.im_patch,
                                            im_col=t.im_col)]
