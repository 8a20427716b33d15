"""``JinaVLMForConditionalGeneration`` as a Transformers ``PreTrainedModel`` + ``GenerationMixin``.

The module tree and the forward pass are jvlm's own (``jvlm.model``: ``model.vision_model``,
``model.language_model``, ``lm_head``), so ``state_dict()`` keys are the released keys and the
engine, training and Transformers run one implementation. Transformers' ``generate`` drives
it through its cache interface: the decoder writes into the ``DynamicCache`` that
``generate`` owns (grown, reordered for beam search, cropped for assisted decoding by
Transformers), so every generation option of Transformers applies.

``from_pretrained`` loads through ``jvlm.loading`` (strict, safetensors only, official or
MLX-float key layout) after resolving the name (``jvlm.resolve``: folder, bundled name,
Hugging Face cache, download). Its loading options either take effect or raise
(``jvlm.integrations.transformers.options``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from jvlm.integrations.transformers.configuration import JinaVLMConfig
from jvlm.model.text import ExternalCache, KVCache
from jvlm.model.vlm import JinaVLM, VLMRuntime, lm_forward

log = logging.getLogger(__name__)
#: The output field holding the cache: "past_key_values", renamed "cache" in later 5.x releases.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class JinaVLMPreTrainedModel(PreTrainedModel):
    config_class = JinaVLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["VisionBlock", "TextBlock"]
    _supports_sdpa = True
    _skip_keys_device_placement = ["past_key_values"]

    def _init_weights(self, module: nn.Module) -> None:
        """Weights come from a checkpoint (or ``jvlm.model.vlm.init_random``); nothing to draw."""


class JinaVLMForConditionalGeneration(VLMRuntime, JinaVLMPreTrainedModel, GenerationMixin):
    """Jina-VLM for Transformers: ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText``.

    ``forward`` takes the processor's outputs (``input_ids``, ``attention_mask``, ``images``,
    ``image_masks``, ``image_input_idx``); images are read at prefill only. ``labels``
    follow the official processor's convention: already aligned (label[t] is the token
    after input[t]), negatives ignored.
    """

    def __init__(self, config: JinaVLMConfig):
        super().__init__(config)
        cfg = config.to_jvlm()
        self.cfg = cfg
        self.model = JinaVLM(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.base_rows, bias=False)
        self.tied = False
        self.structural_token_ids: list[int] = []
        self.stop_token_ids: list[int] = []
        self.stored_dtype: torch.dtype | None = None  # see jvlm.model.vlm.JinaVLMForConditionalGeneration
        self.post_init()

    # ------------------------------------------------------------------ basics
    def get_input_embeddings(self) -> nn.Module:
        return self.model.language_model.embedding

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def tie_lm_head(self) -> None:
        """Share lm_head with the base embedding table (only when the checkpoint has none)."""
        self.lm_head.weight = self.model.language_model.embedding.embedding
        self.tied = True

    # ----------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_masks: torch.Tensor | None = None,
                image_input_idx: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                past_key_values=None, cache=None, use_cache: bool | None = None, logits_to_keep: int = 0,
                inputs_embeds: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **_generation_extras) -> CausalLMOutputWithPast:
        # position_ids / cache_position from generate() are not needed: positions are
        # cumsum(attention_mask) - 1 over past + new tokens (spec §4.5), the same numbers.
        if inputs_embeds is not None:
            raise ValueError("jvlm builds its input embeddings itself (image features are added onto "
                             "<im_patch> rows); pass input_ids, not inputs_embeds")
        if output_attentions:
            raise ValueError("output_attentions is not supported by jvlm's decoder")
        if input_ids is None:
            raise ValueError("input_ids is required")
        use_cache = getattr(self.config, "use_cache", True) if use_cache is None else use_cache
        cache = cache if cache is not None else past_key_values  # "cache" since Transformers 5.2x
        if cache is None and use_cache and not self.training:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        adapter = cache if (cache is None or isinstance(cache, KVCache)) else ExternalCache(cache)
        out = lm_forward(self, input_ids, attention_mask, images, image_masks, image_input_idx, labels,
                         adapter, image_features, logits_to_keep)
        return CausalLMOutputWithPast(
            loss=out.loss, logits=out.logits, hidden_states=(out.hidden_states,) if output_hidden_states else None,
            **{_CACHE_FIELD: cache},
        )

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs) -> "JinaVLMForConditionalGeneration":
        """Load a model folder, a bundled name (``jvlm-demo``) or a Hugging Face repo id.

        Options: ``dtype``/``torch_dtype`` ("auto" or None: the checkpoint's), ``device_map``
        (a device, ``{"": device}``, or "auto"/"balanced"/"sequential" via accelerate),
        ``attn_implementation`` ("sdpa", "eager"; "flash_attention_2" on CUDA only),
        ``quantization_config`` (torchao ``TorchAoConfig``), plus the usual hub options
        (``revision``, ``cache_dir``, ``token``, ``local_files_only``). Anything else raises.
        """
        from jvlm.integrations.transformers import options
        from jvlm.loading import load_model
        from jvlm.resolve import resolve_model

        if model_args:
            raise TypeError(f"unexpected positional arguments {model_args!r}; pass options by name")
        opts = options.LoadOptions.from_kwargs(kwargs)
        folder = resolve_model(pretrained_model_name_or_path, **opts.hub).path
        config = JinaVLMConfig.from_pretrained(str(folder))
        config._name_or_path = str(pretrained_model_name_or_path)
        config._attn_implementation = opts.attn_implementation
        # Transformers' "auto" means the checkpoint's dtype, whatever the CPU
        model = load_model(folder, dtype=opts.dtype or "checkpoint", device="cpu", build=lambda _cfg: cls(config))
        model.model.language_model.set_attn_implementation(opts.attn_implementation)
        model.config.dtype = model.dtype
        try:
            from jvlm.processing.processor import JinaVLMProcessor as CoreProcessor

            model.use_token_ids(CoreProcessor.from_pretrained(folder).token_ids)
        except Exception as e:  # a weights-only folder still loads; generate then needs explicit ids
            log.warning("no usable tokenizer in %s (%s); pass eos_token_id to generate()", folder, e)
        model.generation_config = _generation_config(folder, model)
        options.quantize(model, opts.quantization_config)
        options.place(model, opts.device_map)
        return model.eval()

    def save_pretrained(self, save_directory, processor=None, max_shard_size=None, is_main_process: bool = True,
                        safe_serialization: bool = True, push_to_hub: bool = False, **kwargs) -> None:
        """Write the official folder layout (config.json, safetensors, generation_config.json)."""
        from jvlm.loading import save_pretrained

        if not safe_serialization:
            raise ValueError("jvlm writes safetensors only (safe_serialization=False is not supported)")
        if push_to_hub:
            raise ValueError("push_to_hub is not supported; save the folder, then upload it with `hf upload`")
        extra = sorted(k for k in kwargs if k not in ("state_dict", "variant", "token"))
        if extra:
            raise TypeError(f"save_pretrained() got unsupported options {extra}")
        if not is_main_process:
            return
        shard = _parse_size(max_shard_size)
        save_pretrained(self, save_directory, processor=processor, max_shard_bytes=shard)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(str(save_directory))


def _generation_config(folder: Path, model) -> GenerationConfig:
    """The folder's ``generation_config.json``, else greedy with the tokenizer's stop ids."""
    if (Path(folder) / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(str(folder))
    else:
        gen = GenerationConfig(do_sample=False, max_new_tokens=256)
    if gen.eos_token_id is None and model.stop_token_ids:
        gen.eos_token_id = list(model.stop_token_ids)
    if gen.pad_token_id is None:
        gen.pad_token_id = model.config.pad_token_id
    return gen


def _parse_size(size) -> int | None:
    """``"5GB"`` / ``"500MB"`` / bytes -> bytes (Transformers' max_shard_size spellings)."""
    if size is None or isinstance(size, int):
        return size
    text = str(size).strip().upper()
    for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)
