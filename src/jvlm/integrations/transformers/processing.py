"""``JinaVLMImageProcessor`` (a ``BaseImageProcessor``) and ``JinaVLMProcessor`` (a
``ProcessorMixin``), under the names the release's ``preprocessor_config.json`` and
``processor_config.json`` use, so ``AutoProcessor`` / ``AutoImageProcessor`` and the
``image-text-to-text`` pipeline accept them.

Both are thin: the pixels come from ``jvlm.processing.image`` and the token layout from
``jvlm.processing.processor.JinaVLMProcessor`` (which ``jvlm.load`` returns and which this
class wraps), so ``AutoProcessor`` and ``jvlm.load`` give the same ``input_ids`` and pixel
tensors. This module imports nothing of jvlm that imports Transformers itself, so it can be
imported (and registered) while Transformers is being imported from inside jvlm.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from jvlm.config import ImageProcessingConfig, JinaVLMConfig
from jvlm.processing.image import ProcessedImage, preprocess_image
from jvlm.processing.options import check_return_tensors, hub_options


class JinaVLMImageProcessor(BaseImageProcessor):
    """The official ``overlap-and-resize`` image processor (settings: ``ImageProcessingConfig``).

    ``image_processor(images)`` returns ``images`` (crops x 729 x 588), ``image_masks`` and
    ``image_input_idx`` relative to each image's block, every image's crops concatenated.
    """

    model_input_names = ["images", "image_masks", "image_input_idx"]

    def __init__(self, image_config: ImageProcessingConfig | None = None, **kwargs):
        """Settings: ``image_config``, overlaid by any of its fields (the keys of a release's
        ``preprocessor_config.json``). Other keys would have no effect, so they raise."""
        if kwargs.get("do_convert_rgb") is False:
            raise ValueError("do_convert_rgb=False is not supported: Jina-VLM's vision tower takes RGB")
        if kwargs.get("base_input_size"):
            size = kwargs["base_input_size"]
            kwargs.setdefault("crop_size", int(size[0] if isinstance(size, (list, tuple)) else size))
        unknown = sorted(k for k in kwargs if k not in _FIELDS and k not in _IGNORED)
        if unknown:
            raise TypeError(f"JinaVLMImageProcessor got settings jvlm does not support: {unknown}. Supported: "
                            f"{', '.join(sorted(_FIELDS))}")
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _FIELDS}
        super().__init__()
        cfg = image_config or ImageProcessingConfig()
        self.image_config = dataclasses.replace(cfg, **_coerce(settings))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "JinaVLMImageProcessor":
        """The image settings of a model folder, bundled name or repo id (hub options as
        ``JinaVLMProcessor.from_pretrained``; anything else raises ``TypeError``)."""
        from jvlm.resolve import resolve_model

        hub = hub_options(kwargs, "JinaVLMImageProcessor.from_pretrained")
        folder = resolve_model(pretrained_model_name_or_path, **hub).path
        if (folder / "config.json").is_file():
            cfg = JinaVLMConfig.load(folder).image
        else:
            core = JinaVLMConfig()
            pre = folder / "preprocessor_config.json"
            if pre.is_file():
                core.apply_preprocessor_config(json.loads(pre.read_text()))
            cfg = core.image
        return cls(cfg)

    def process(self, image, max_crops: int | None = None, exif_for_pil: bool = False) -> ProcessedImage:
        from jvlm.processing.processor import _fetch_if_url

        return preprocess_image(_fetch_if_url(image), self.image_config, max_crops=max_crops,
                                exif_for_pil=exif_for_pil)

    def preprocess(self, images, max_crops: int | None = None, return_tensors: str | None = "pt",
                   **unsupported) -> BatchFeature:
        """Crops of one image or a list, concatenated. Resizing, cropping and normalization follow
        the model's settings (``image_config``); per-call options other than ``max_crops`` and
        ``return_tensors`` raise ``TypeError`` rather than being dropped."""
        if unsupported:
            raise TypeError(f"the image processor got options jvlm does not support: {sorted(unsupported)}. "
                            "Supported: max_crops, return_tensors (the other settings are the model's, in "
                            "preprocessor_config.json)")
        check_return_tensors(return_tensors)
        images = images if isinstance(images, (list, tuple)) else [images]
        done = [self.process(im, max_crops) for im in images]
        data = {
            "images": np.concatenate([p.crops for p in done]),
            "image_masks": np.concatenate([p.masks for p in done]),
            "image_input_idx": np.concatenate([p.image_input_idx for p in done]),
        }
        if return_tensors == "pt":
            data = {k: torch.from_numpy(v) for k, v in data.items()}
        return BatchFeature(data=data)

    def to_dict(self) -> dict:
        return {"image_processor_type": type(self).__name__, **dataclasses.asdict(self.image_config)}


_FIELDS = {f.name for f in dataclasses.fields(ImageProcessingConfig)}
_IGNORED = {"image_processor_type", "processor_class", "auto_map", "do_convert_rgb", "base_input_size",
            "_processor_class"}


def _coerce(settings: dict) -> dict:
    if "overlap_margins" in settings:
        settings["overlap_margins"] = tuple(settings["overlap_margins"])
    return settings


class JinaVLMProcessor(ProcessorMixin):
    """Tokenizer + image processor for Transformers (``AutoProcessor``, pipelines).

    Everything user-facing (``__call__``, ``apply_chat_template``, ``decode``, ``token_ids``)
    is that of the ``jvlm.processing.processor.JinaVLMProcessor`` it wraps (``.core``), set
    up with this image processor's settings.
    """

    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor: JinaVLMImageProcessor, tokenizer, config: JinaVLMConfig | None = None,
                 chat_template: str | None = None):
        from jvlm.processing.processor import JinaVLMProcessor as CoreProcessor

        config = (config or JinaVLMConfig()).copy()
        config.image = image_processor.image_config
        self.core = CoreProcessor(tokenizer, config)
        self.core.process_image = self.process_image  # one image path: this image processor's
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)

    def __getattr__(self, name):  # token_ids, config, image_config, encode, collate, ...
        if name == "core":
            raise AttributeError(name)
        return getattr(self.core, name)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "JinaVLMProcessor":
        from jvlm.processing.text import load_tokenizer
        from jvlm.resolve import resolve_model

        hub = hub_options(kwargs, "JinaVLMProcessor.from_pretrained")
        folder = resolve_model(pretrained_model_name_or_path, **hub).path
        config = JinaVLMConfig.load(folder)
        return cls(JinaVLMImageProcessor(config.image), load_tokenizer(folder), config)

    @classmethod
    def from_core(cls, processor) -> "JinaVLMProcessor":
        """The Transformers class around a processor from ``jvlm.load``."""
        return cls(JinaVLMImageProcessor(processor.image_config), processor.tokenizer, processor.config)

    def process_image(self, image, max_crops: int | None = None, exif_for_pil: bool = True) -> ProcessedImage:
        return self.image_processor.process(image, max_crops, exif_for_pil)

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", max_crops: int | None = None,
                 **kwargs):
        return self.core(text=text, images=images, return_tensors=return_tensors, max_crops=max_crops, **kwargs)

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = False,
                            return_dict: bool = False, return_tensors: str | None = None,
                            max_crops: int | None = None, processor_kwargs: dict | None = None,
                            continue_final_message: bool = False, **kwargs):
        if continue_final_message:
            raise ValueError("continue_final_message is not supported by jvlm's chat template")
        return self.core.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                             tokenize=tokenize, return_dict=return_dict,
                                             return_tensors=return_tensors, max_crops=max_crops,
                                             processor_kwargs=processor_kwargs, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.core.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, seqs, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return self.core.batch_decode(seqs, skip_special_tokens=skip_special_tokens, **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    def save_pretrained(self, save_directory, **_kwargs) -> None:
        self.core.save_pretrained(save_directory)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "images", "image_masks", "image_input_idx"]

    def __repr__(self) -> str:
        return f"JinaVLMProcessor(image_processor={self.image_processor!r}, tokenizer={type(self.tokenizer).__name__})"

    def to_dict(self) -> dict:
        return {"processor_class": type(self).__name__}


__all__ = ["JinaVLMImageProcessor", "JinaVLMProcessor"]
