"""Transformers integration: after ``import jvlm`` the auto classes know ``model_type: jvlm``.

``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)``
resolve to jvlm's own classes (a locally registered class wins over a folder's remote code,
which only runs on Transformers 4.x). Loading goes through ``jvlm.loading`` — strict,
safetensors only — rather than Transformers' generic loader.
"""

from __future__ import annotations

import logging

try:  # Transformers 5 renamed the base class; 4.x has only the old name
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - depends on the installed version
    from transformers import PretrainedConfig as _BaseConfig

from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from jvlm.config import JinaVLMConfig
from jvlm.loading import attach_token_ids, load_model, save_pretrained
from jvlm.model.vlm import JinaVLMForConditionalGeneration

log = logging.getLogger(__name__)


class JinaVLMHFConfig(_BaseConfig):
    """Carries the raw ``config.json`` fields; ``to_jvlm()`` gives the typed config."""

    model_type = "jvlm"

    def to_jvlm(self) -> JinaVLMConfig:
        return JinaVLMConfig.from_official_dict(self.to_dict())


class JinaVLMForCausalLM(JinaVLMForConditionalGeneration):
    """The model class the auto classes return (same module tree and weights)."""

    config_class = JinaVLMHFConfig

    @classmethod
    def from_pretrained(cls, path, *_args, config=None, torch_dtype=None, dtype=None, device_map=None,
                        **kwargs) -> JinaVLMForConditionalGeneration:
        ignored = sorted(k for k in kwargs if k not in {"trust_remote_code", "low_cpu_mem_usage", "adapter_kwargs"})
        if ignored:
            log.debug("jvlm ignores from_pretrained options %s", ignored)
        device = device_map if isinstance(device_map, str) else None
        model = load_model(path, dtype=dtype or torch_dtype, device=device or "cpu")
        model.__class__ = cls
        from jvlm.processing.processor import JinaVLMProcessor

        try:
            attach_token_ids(model, JinaVLMProcessor.from_pretrained(path))
        except Exception as e:  # a weights-only folder still loads; generation then needs explicit ids
            log.warning("no usable tokenizer in %s (%s); pass eos_token_id to generate()", path, e)
        return model

    def save_pretrained(self, folder, processor=None, **kwargs) -> None:
        save_pretrained(self, folder, processor=processor, max_shard_bytes=kwargs.get("max_shard_size"))


class JinaVLMAutoProcessor:
    """Entry for ``AutoProcessor``; returns a ``jvlm.processing.processor.JinaVLMProcessor``.

    (Not the processor class itself, so that registering does not import the tokenizer stack
    while Transformers is still being imported.)
    """

    @classmethod
    def from_pretrained(cls, folder, *_args, **_kwargs):
        from jvlm.processing.processor import JinaVLMProcessor

        return JinaVLMProcessor.from_pretrained(folder)


def register() -> None:
    AutoConfig.register("jvlm", JinaVLMHFConfig, exist_ok=True)
    AutoModelForCausalLM.register(JinaVLMHFConfig, JinaVLMForCausalLM, exist_ok=True)
    try:
        from transformers import AutoModelForImageTextToText

        AutoModelForImageTextToText.register(JinaVLMHFConfig, JinaVLMForCausalLM, exist_ok=True)
    except (ImportError, ValueError):  # pragma: no cover - older Transformers
        pass
    AutoProcessor.register(JinaVLMHFConfig, JinaVLMAutoProcessor, exist_ok=True)
