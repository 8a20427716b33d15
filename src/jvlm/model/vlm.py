"""Composition: ViT + connector features are *added* onto the ``<im_patch>`` embeddings at
``image_input_idx`` positions, then the decoder runs (spec §8).

Module tree = the official one: ``model.vision_model`` (with the connector inside),
``model.language_model`` and ``lm_head``, so ``state_dict()`` keys are the released keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jvlm.config import JinaVLMConfig
from jvlm.errors import PromptError
from jvlm.model.loss import next_token_loss
from jvlm.model.text import KVCache, TextDecoder
from jvlm.model.vision import VisionTransformer


@dataclass
class VLMOutput:
    logits: torch.Tensor  # (B, T_kept, vocab)
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # (B, T, hidden) after ln_f
    past_key_values: KVCache | None = None

    def __getitem__(self, key):  # dict-style access, as Transformers outputs allow
        return getattr(self, key)


class JinaVLM(nn.Module):
    def __init__(self, cfg: JinaVLMConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_model = VisionTransformer(cfg)
        self.language_model = TextDecoder(cfg.text)
        # Set by the loader from the tokenizer; enables the image-token count check.
        self.im_patch_token_id: int | None = None

    def image_features(self, images: torch.Tensor, image_masks: torch.Tensor) -> torch.Tensor:
        """(B, T, P, 588) crops -> (B, T, tokens_per_crop, hidden) decoder-width features."""
        return self.vision_model(images, image_masks)

    def merge_image_features(self, embeds: torch.Tensor, input_ids: torch.Tensor, feats: torch.Tensor,
                             image_input_idx: torch.Tensor) -> torch.Tensor:
        """Add (B, T, K, H) features onto (B, S, H) embeddings at the non-negative idx positions."""
        b, s, h = embeds.shape
        idx = image_input_idx.reshape(b, -1).to(embeds.device)  # (B, T*K)
        feats = feats.reshape(b, -1, h).to(embeds.dtype)  # (B, T*K, H)
        keep = idx >= 0
        if bool((idx >= s).any()):
            raise PromptError(f"image_input_idx points past the sequence end ({int(idx.max())} >= {s})")
        if self.im_patch_token_id is not None:
            n_slots = (input_ids == self.im_patch_token_id).sum(-1)
            n_feats = keep.sum(-1)
            if not torch.equal(n_slots.cpu(), n_feats.cpu()):
                raise PromptError(
                    f"image features and <im_patch> tokens disagree: {n_feats.tolist()} features vs "
                    f"{n_slots.tolist()} <im_patch> tokens per row; build inputs with the jvlm processor"
                )
        rows = torch.arange(b, device=embeds.device)[:, None].expand_as(idx)
        out = embeds.clone()
        out.index_put_((rows[keep], idx[keep]), feats[keep], accumulate=True)
        return out

    def embed(self, input_ids: torch.Tensor, images=None, image_masks=None, image_input_idx=None,
              image_features: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.language_model.embedding(input_ids)  # (B, S, H)
        if image_features is None and images is not None:
            if image_masks is None:
                image_masks = torch.ones(images.shape[:3], dtype=images.dtype, device=images.device)
            image_features = self.image_features(images, image_masks)
        if image_features is not None:
            if image_input_idx is None:
                raise PromptError("images were given without image_input_idx")
            embeds = self.merge_image_features(embeds, input_ids, image_features, image_input_idx)
        return embeds


class VLMRuntime:
    """What generation needs of a whole Jina-VLM model (``jvlm.inference.engine.DecodingModel``),
    shared by this package's class and the Transformers one: both hold ``model`` (``JinaVLM``),
    ``lm_head`` and ``cfg``, and declare the token-id lists ``use_token_ids`` fills."""

    model: JinaVLM
    cfg: JinaVLMConfig
    structural_token_ids: list[int]
    stop_token_ids: list[int]
    stored_dtype: torch.dtype | None

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations are computed in: the embedding table's, whatever format the
        decoder's linear layers hold their weights in (``jvlm.inference.quantize``)."""
        return self.model.language_model.embedding.embedding.dtype

    def encode_images(self, crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, T, P, 588) crops and (B, T, P) masks -> (B, T, K, hidden) image features."""
        return self.model.image_features(crops, masks)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return self.model.language_model.new_cache(batch, capacity)

    def use_token_ids(self, ids) -> None:
        """The tokenizer's special ids (``processing.text.TokenIds``): ``<im_patch>`` for the
        image-token count check, the structural ids (never sampled) and the stop ids."""
        self.model.im_patch_token_id = ids.im_patch
        self.structural_token_ids = list(ids.structural())
        self.stop_token_ids = list(ids.eos)


class JinaVLMForConditionalGeneration(VLMRuntime, nn.Module):
    """The whole model. ``forward`` returns logits; ``jvlm.generate`` and the engine
    (``jvlm.inference``) decode with it, the Transformers class adds ``generate``."""

    def __init__(self, cfg: JinaVLMConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.model = JinaVLM(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.base_rows, bias=False)
        self.tied = False
        self.structural_token_ids: list[int] = []
        self.stop_token_ids: list[int] = []
        # The dtype the checkpoint stored, when the loader computes in another (``hardware``).
        self.stored_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ basics
    @property
    def config(self) -> JinaVLMConfig:
        return self.cfg

    @property
    def device(self) -> torch.device:
        return self.model.language_model.embedding.embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype

    def tie_weights(self) -> None:
        """Share lm_head with the base embedding table (only when the checkpoint has no lm_head)."""
        self.lm_head.weight = self.model.language_model.embedding.embedding
        self.tied = True

    def tie_lm_head(self) -> None:
        self.tie_weights()

    def generate(self, *args, **kwargs):
        """Not here: the model layer does not run decoding loops (see docs/architecture.md)."""
        raise AttributeError("JinaVLMForConditionalGeneration from jvlm.load has no generate(): call "
                             "jvlm.generate(model, **inputs, max_new_tokens=...) for the engine's decoding, or "
                             "load with transformers.AutoModelForCausalLM for Transformers' generate")

    # ----------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_masks: torch.Tensor | None = None,
                image_input_idx: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, image_features: torch.Tensor | None = None,
                logits_to_keep: int = 0, use_cache: bool | None = None) -> VLMOutput:
        """One pass. ``attention_mask`` spans cached + new tokens; ``labels`` are already
        aligned with inputs (label[t] is the token after input[t], negatives ignored), as the
        official processor produces them. ``use_cache`` is accepted for Transformers-style
        callers: this class uses a cache exactly when ``past_key_values`` is given.
        """
        return lm_forward(self, input_ids, attention_mask, images, image_masks, image_input_idx, labels,
                          past_key_values, image_features, logits_to_keep)


def lm_forward(model: nn.Module, input_ids, attention_mask=None, images=None, image_masks=None,
               image_input_idx=None, labels=None, cache=None, image_features=None,
               logits_to_keep: int = 0) -> VLMOutput:
    """The whole model's forward pass for any module holding ``.model`` (``JinaVLM``) and
    ``.lm_head``: this class and the Transformers class share it. ``cache`` is a ``KVCache``
    or an ``ExternalCache`` (a Transformers cache)."""
    if cache is not None and cache.length > 0:
        images = image_features = None  # images are consumed at prefill only
    embeds = model.model.embed(input_ids, images, image_masks, image_input_idx, image_features)
    hidden = model.model.language_model(embeds, attention_mask, cache)
    kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
    logits = model.lm_head(kept)
    loss = None
    if labels is not None:
        loss = next_token_loss(logits, labels[:, -kept.shape[1]:])
    return VLMOutput(logits=logits, loss=loss, hidden_states=hidden, past_key_values=cache)


def init_random(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Deterministic random weights (tests, benchmarks, training from scratch).

    Norm scales start at 1 and norm shifts at 0; every other tensor, biases included, is
    drawn from N(0, std) so that a forgotten bias or a swapped half changes the outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_meta:
                raise ValueError("materialise the model (to_empty) before init_random")
            is_norm = "lnorm" in name or "ln_f" in name or name.endswith(("q_lnorm.weight", "k_lnorm.weight"))
            if is_norm:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
    return model


def init_connector_fan_in(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw the connector's matrices from N(0, 1/fan_in) (biases and pad embeddings kept).

    For training a connector from scratch. With ``init_random``'s flat N(0, 0.02) the
    connector is a chain of five small matrices (pooling q/kv/out, projector up/down) and
    a gated product, so its output starts near 1e-4: the decoder sees no image at first,
    the vision encoder gets almost no gradient, and under Adam the chain later grows by
    orders of magnitude instead (measured on jvlm-demo: features 5e5 after 2,000 steps,
    and a model that ignored the pixels). Fan-in scaling starts the features near unit
    size, like the decoder's normalised inputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".vl_connector." in name and p.dim() == 2 and "pad_embed" not in name:
                fan_in = p.shape[1]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).div_(fan_in ** 0.5).to(p.dtype))
    return model
