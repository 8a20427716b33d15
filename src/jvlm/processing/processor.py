"""The image-text contract: lays out image blocks in the token stream and checks the counts.

Each ``<|image|>`` placeholder in the tokenized prompt is replaced by that image's block
(thumbnail block, then the tiles block; spec §4.1). ``image_input_idx`` says, for every pooled
cell of every crop, which ``<im_patch>`` position receives its feature. BOS is prepended and
every index shifted by one (spec §4.4).

Deliberate differences from the official processor (documented in docs/decisions.md):
- several images without placeholders are all placed at position 0 with *correct* offsets
  (the official code points every image after the first one token early; Corrections 7);
- batches are left-padded with the tokenizer's pad id rather than -1 (the attention mask
  carries the same information, and decoded outputs never contain an invalid id).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jvlm.config import JinaVLMConfig
from jvlm.errors import ContextLengthError, InvalidImageError, PromptError
from jvlm.processing.chat_text import encode_chat
from jvlm.processing.image import ProcessedImage, image_block_ids, preprocess_image
from jvlm.processing.options import check_return_tensors
from jvlm.processing.text import SpecialTokenIds, load_tokenizer, save_tokenizer, special_token_ids

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One prompt with its images, before batching."""

    input_ids: list[int]
    images: np.ndarray | None  # (n_crops, P, 588) float32, all images concatenated
    image_masks: np.ndarray | None  # (n_crops, P)
    image_input_idx: np.ndarray | None  # (n_crops, tokens_per_crop) absolute positions, <0 = none
    processed: list[ProcessedImage]

    @property
    def n_image_tokens(self) -> int:
        return sum(p.layout.n_block_tokens for p in self.processed)


class JinaVLMProcessor:
    """Tokenizer + image processor. Transformers-style: ``__call__``, ``apply_chat_template``,
    ``decode``/``batch_decode``, ``from_pretrained``/``save_pretrained``."""

    def __init__(self, tokenizer, config: JinaVLMConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.image_config = config.image
        self.token_ids: SpecialTokenIds = special_token_ids(tokenizer, config.tokens)
        self.model_max_length = config.text.max_sequence_length

    # ------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "JinaVLMProcessor":
        """The processor of a model folder (``jvlm.resolve_model`` turns names into folders;
        the Transformers class takes hub options)."""
        folder = Path(folder)
        return cls(load_tokenizer(folder), JinaVLMConfig.load(folder))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        save_tokenizer(self.tokenizer, folder)
        im = self.image_config
        pre = {
            "image_processor_type": "JinaVLMImageProcessor",
            "cropping_method": im.cropping_method,
            "base_input_size": [im.crop_size, im.crop_size],
            "patch_size": im.patch_size,
            "overlap_margins": list(im.overlap_margins),
            "max_crops": im.max_crops,
            "min_pixels": im.min_pixels,
            "max_pixels": im.max_pixels,
            "normalization_method": im.normalization_method,
            "image_min": im.image_min,
            "image_max": im.image_max,
            "interpolation": im.interpolation,
            "antialias": im.antialias,
            "resize_in_float32": im.resize_in_float32,
            "do_convert_rgb": True,
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")

    # ----------------------------------------------------------------- images
    def process_image(self, image, max_crops: int | None = None, exif_for_pil: bool = True) -> ProcessedImage:
        """One image's crops and layout. ``exif_for_pil``: rotate an in-memory PIL image by its
        EXIF orientation, as the release does for chat-message images (the default here,
        since the engine builds every prompt from messages); ``processor(images=...)`` does
        not, like the release."""
        return preprocess_image(_fetch_if_url(image), self.image_config, max_crops=max_crops,
                                exif_for_pil=exif_for_pil)

    def image_block(self, processed: ProcessedImage) -> np.ndarray:
        t = self.token_ids
        return image_block_ids(processed.layout, im_start=t.im_start, im_end=t.im_end, im_patch=t.im_patch,
                               im_col=t.im_col)

    # --------------------------------------------------------------- encoding
    def encode(self, text: str | list[int], images=(), max_crops: int | None = None,
               processed: list[ProcessedImage] | None = None, exif_for_pil: bool = True) -> Encoded:
        """Tokenize ``text`` (a string, or ids from a chat template) and splice in image blocks.

        A prompt that ends in the tokenizer's EOS token loses it, as in the release (a
        finished training sequence fed back as a prompt continues, rather than stops)."""
        ids = list(text) if isinstance(text, list) else self.tokenizer(text, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if ids and eos is not None and ids[-1] == eos:
            ids = ids[:-1]
        if processed is None:
            processed = [self.process_image(img, max_crops, exif_for_pil) for img in images]
        n_images = len(processed)
        placeholder = self.token_ids.image
        slots = [i for i, tok in enumerate(ids) if tok == placeholder]
        if slots and len(slots) != n_images:
            raise PromptError(f"the prompt has {len(slots)} <|image|> placeholders but {n_images} images were given")
        if not slots and n_images:
            ids = [placeholder] * n_images + ids  # official: blocks go to position 0
            slots = list(range(n_images))
        out: list[int] = []
        crops, masks, idxs = [], [], []
        prev = 0
        for slot, p in zip(slots, processed):
            out.extend(ids[prev:slot])
            offset = len(out) + 1  # +1: BOS is prepended below
            block = self.image_block(p)
            idx = p.image_input_idx.copy()
            idx[idx >= 0] += offset
            out.extend(int(x) for x in block)
            crops.append(p.crops)
            masks.append(p.masks)
            idxs.append(idx)
            prev = slot + 1
        out.extend(ids[prev:])
        out = [self.token_ids.bos] + out
        if not processed:
            return Encoded(out, None, None, None, [])
        return Encoded(out, np.concatenate(crops), np.concatenate(masks), np.concatenate(idxs), processed)

    def check_length(self, enc: Encoded, max_new_tokens: int = 0) -> None:
        total = len(enc.input_ids) + max_new_tokens
        if total > self.model_max_length:
            raise ContextLengthError(
                f"prompt needs {len(enc.input_ids)} tokens ({enc.n_image_tokens} of them image tokens) + "
                f"{max_new_tokens} new tokens = {total}, over the context of {self.model_max_length}; "
                "use fewer or smaller images (max_crops) or fewer new tokens"
            )

    def collate(self, encoded: list[Encoded], return_tensors: str | None = "pt",
                length: int | None = None) -> dict[str, Any]:
        """Left-pad a batch to ``length`` (default: the longest prompt). Crops are padded with -1
        only up to the largest crop count. ``return_tensors``: "pt" (torch), "np" or None (numpy)."""
        from transformers import BatchFeature

        check_return_tensors(return_tensors)
        b = len(encoded)
        length = max([len(e.input_ids) for e in encoded] + [length or 0])
        pad = self.token_ids.pad
        input_ids = np.full((b, length), pad, dtype=np.int64)
        attention = np.zeros((b, length), dtype=np.int64)
        for i, e in enumerate(encoded):
            input_ids[i, length - len(e.input_ids):] = e.input_ids
            attention[i, length - len(e.input_ids):] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        with_images = [e for e in encoded if e.images is not None]
        if with_images:
            ic = self.image_config
            n_patch = ic.grid * ic.grid
            patch_dim = ic.patch_size * ic.patch_size * 3
            t = max(e.images.shape[0] for e in with_images)
            images = np.full((b, t, n_patch, patch_dim), -1.0, dtype=np.float32)
            masks = np.full((b, t, n_patch), -1.0, dtype=np.float32)
            idx = np.full((b, t, ic.tokens_per_crop), -1, dtype=np.int64)
            for i, e in enumerate(encoded):
                if e.images is None:
                    continue
                shift = length - len(e.input_ids)
                n = e.images.shape[0]
                images[i, :n], masks[i, :n] = e.images, e.image_masks
                idx[i, :n] = np.where(e.image_input_idx >= 0, e.image_input_idx + shift, e.image_input_idx)
            data.update(images=images, image_masks=masks, image_input_idx=idx)
        if return_tensors == "pt":
            data = {k: torch.from_numpy(v) for k, v in data.items()}
        return BatchFeature(data=data)

    def __call__(self, text: str | list[str] | list[list[int]] | None = None, images=None,
                 return_tensors: str | None = "pt", max_crops: int | None = None, padding: bool | str = True,
                 truncation: bool | str | None = None, max_length: int | None = None,
                 _exif_for_pil: bool = False, **unsupported):
        """``processor(text=..., images=...)``: one prompt or a list (or token id lists); images per prompt.

        A batch is left-padded to its longest prompt (``padding=True``/"longest"), to
        ``max_length`` (``padding="max_length"``), or not at all (``padding=False``: the prompts
        must then be of one length). Prompts are never truncated — cutting one could cut an
        image's block — so ``truncation=True`` raises; an over-long prompt raises
        ``ContextLengthError``. Any other option raises ``TypeError``.

        In-memory PIL images keep their pixel order (no EXIF rotation), as in the release;
        images of chat messages (``apply_chat_template``) are rotated."""
        if unsupported:
            raise TypeError(f"the processor got options jvlm does not support: {sorted(unsupported)}. Supported: "
                            "text, images, return_tensors, max_crops, padding, truncation=False, max_length "
                            "(with padding='max_length')")
        if truncation not in (None, False, "do_not_truncate"):
            raise ValueError(f"truncation={truncation!r} is not supported: cutting a prompt could cut an image's "
                             "block; over-long prompts raise ContextLengthError instead (use fewer or smaller "
                             "images, max_crops, or shorter text)")
        if padding not in (True, False, "longest", "do_not_pad", "max_length"):
            raise ValueError(f"padding={padding!r} is not supported; use True/'longest', False/'do_not_pad' or "
                             "'max_length' (with max_length)")
        if (padding == "max_length") != (max_length is not None):
            raise ValueError("max_length sets the padded length and needs padding='max_length' (and that padding "
                             "needs max_length); jvlm never truncates")
        check_return_tensors(return_tensors)
        if text is None:
            text = ""
        texts = [text] if isinstance(text, str) else list(text)
        if images is None:
            per = [[] for _ in texts]
        elif len(texts) == 1 and not (isinstance(images, list) and images and isinstance(images[0], list)):
            per = [images if isinstance(images, list) else [images]]
        else:
            per = [imgs if isinstance(imgs, list) else [imgs] for imgs in images]
        if len(per) != len(texts):
            raise PromptError(f"{len(texts)} prompts but {len(per)} image lists")
        encoded = [self.encode(t, imgs, max_crops, exif_for_pil=_exif_for_pil) for t, imgs in zip(texts, per)]
        for e in encoded:
            self.check_length(e)
        lengths = sorted({len(e.input_ids) for e in encoded})
        if padding in (False, "do_not_pad") and len(lengths) > 1:
            raise PromptError(f"with padding=False the prompts must be of one length; they have {lengths} tokens "
                              "(pass padding=True to left-pad them)")
        if max_length is not None and lengths[-1] > max_length:
            raise PromptError(f"a prompt of {lengths[-1]} tokens is longer than max_length={max_length}; jvlm "
                              "never truncates (raise max_length or shorten the prompt)")
        return self.collate(encoded, return_tensors, length=max_length)

    # ---------------------------------------------------------- chat template
    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = False,
                            return_dict: bool = False, return_tensors: str | None = None,
                            max_crops: int | None = None, processor_kwargs: dict | None = None, **kwargs):
        """Render messages (Hugging Face format; images as parts) and optionally encode them.

        ``processor_kwargs`` are the processor call's options (``max_crops``, ``padding``, ...;
        see ``__call__``); other keywords are the chat template's variables, as in Transformers."""
        options = dict(processor_kwargs or {})
        if max_crops is not None:
            options.setdefault("max_crops", max_crops)
        if options and not tokenize:
            raise ValueError(f"processor options {sorted(options)} apply to the encoded prompt; pass tokenize=True "
                             "(with tokenize=False only the text is rendered)")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        texts = [self.tokenizer.apply_chat_template(_template_view(c), add_generation_prompt=add_generation_prompt,
                                                    tokenize=False, **kwargs) for c in conversations]
        if not tokenize:
            return texts if batched else texts[0]
        images = [extract_images(c) for c in conversations]
        ids = [self.chat_ids(c, add_generation_prompt=add_generation_prompt, **kwargs) for c in conversations]
        batch = self.__call__(text=ids, images=images, return_tensors=return_tensors or "pt", _exif_for_pil=True,
                              **options)
        if return_dict:
            return batch
        return batch["input_ids"] if return_tensors else batch["input_ids"].tolist()

    def chat_ids(self, conversation, add_generation_prompt: bool = True, context_length: int | None = None,
                 **kwargs) -> list[int]:
        """Token ids of one conversation (before BOS and image blocks; ``encode`` adds them).

        Control tokens typed in message text stay plain text (``text.encode_chat``), and text
        that could not fit the context (default: the model's) is refused before it is tokenized.
        """
        return encode_chat(self.tokenizer, _template_view(conversation), add_generation_prompt,
                           context_length=context_length or self.model_max_length, **kwargs)

    # ----------------------------------------------------------------- decode
    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, seqs, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in seqs]


# --------------------------------------------------------------------- helpers
_IMAGE_PART_TYPES = ("image", "image_url", "input_image")


def _image_of(part: dict) -> Any:
    if part.get("type") == "image_url" or "image_url" in part:
        v = part.get("image_url")
        return v.get("url") if isinstance(v, dict) else v
    for key in ("image", "url", "path", "image_path"):
        if part.get(key) is not None:
            return part[key]
    raise PromptError(f"image part without an image: {sorted(part)}")


def extract_images(messages) -> list:
    """Image sources in the order they appear in the conversation."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            out.extend(_image_of(p) for p in content if isinstance(p, dict) and p.get("type") in _IMAGE_PART_TYPES)
    return out


def _template_view(messages) -> list[dict]:
    """Messages with image parts reduced to ``{"type": "image"}`` (the template only needs the slot)."""
    view = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = [{"type": "image"} if isinstance(p, dict) and p.get("type") in _IMAGE_PART_TYPES else p
                       for p in content]
        view.append({**msg, "content": content})
    return view


def _fetch_if_url(image):
    """http(s) URLs and data: URIs become bytes through ``jvlm.media`` under its local policy
    (time, byte, redirect and pixel caps; no link-local addresses); everything else passes through."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        from jvlm.media import LOCAL_POLICY, MediaError, fetch_media

        try:
            return fetch_media(image, LOCAL_POLICY)
        except MediaError as e:
            raise InvalidImageError(str(e)) from None
    return image
