"""Jina-VLM as Transformers classes, registered under the names the release's files use.

After ``import jvlm`` (before or after ``import transformers``), ``AutoConfig``,
``AutoModelForCausalLM``, ``AutoModelForImageTextToText``, ``AutoProcessor`` and
``AutoImageProcessor`` resolve ``model_type: "jvlm"`` / ``processor_class:
"JinaVLMProcessor"`` / ``image_processor_type: "JinaVLMImageProcessor"`` to these classes.
A locally registered class wins over a folder's remote code (``*_jvlm.py``), so a released
folder loads with or without ``trust_remote_code=True`` and its remote code never runs.
"""

from __future__ import annotations

from jvlm.integrations.transformers.configuration import JinaVLMConfig
from jvlm.integrations.transformers.modeling import JinaVLMForConditionalGeneration, JinaVLMPreTrainedModel
from jvlm.integrations.transformers.processing import JinaVLMImageProcessor, JinaVLMProcessor

#: The name older jvlm releases used for the model class.
JinaVLMForCausalLM = JinaVLMForConditionalGeneration


def register() -> None:
    """Register every class with the auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
    # from its module: some 5.x releases export a placeholder that demands torchvision
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    AutoConfig.register("jvlm", JinaVLMConfig, exist_ok=True)
    AutoModelForCausalLM.register(JinaVLMConfig, JinaVLMForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(JinaVLMConfig, JinaVLMForConditionalGeneration, exist_ok=True)
    AutoModel.register(JinaVLMConfig, JinaVLMForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(JinaVLMConfig, slow_image_processor_class=JinaVLMImageProcessor, exist_ok=True)
    AutoProcessor.register(JinaVLMConfig, JinaVLMProcessor, exist_ok=True)


__all__ = ["JinaVLMConfig", "JinaVLMForCausalLM", "JinaVLMForConditionalGeneration", "JinaVLMImageProcessor",
           "JinaVLMPreTrainedModel", "JinaVLMProcessor", "register"]


register()  # importing this module (or jvlm.hf) directly registers too, whatever was imported first
