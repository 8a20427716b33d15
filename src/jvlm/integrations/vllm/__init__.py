"""vLLM plugin: serve Jina-VLM checkpoints with ``vllm serve`` / vLLM's OpenAI server.

Installed with jvlm, it registers itself through the ``vllm.general_plugins`` entry point
(``register`` below), which vLLM calls in every process it starts. Nothing here is imported
unless vLLM is installed; jvlm never depends on vLLM.

    python -m vllm.entrypoints.openai.api_server --model /path/to/jina-vlm   # or: vllm serve ...

- ``model``: ``JinaVLMForConditionalGeneration``, the released architecture, in vLLM's layers;
- ``processing``: vLLM's multimodal processor, which calls ``jvlm.processing`` for every image;
- ``config``: the Transformers config class vLLM reads ``config.json`` with;
- ``chat_template``: the folder's chat template with the BOS jvlm's processor prepends.

See docs/scale-out.md for installation and launch commands.
"""

from __future__ import annotations

ARCHITECTURE = "JinaVLMForConditionalGeneration"


def register() -> None:
    """Register the config, the chat template holder and the model class with vLLM (idempotent)."""
    import transformers  # noqa: F401 - import first so that jvlm's own Transformers hook runs now, not later

    import jvlm  # noqa: F401
    from transformers import AutoConfig, AutoProcessor
    from vllm import ModelRegistry

    from jvlm.integrations.vllm.chat_template import JinaVLMChatProcessor
    from jvlm.integrations.vllm.config import JinaVLMVllmConfig

    # Inside vLLM, model_type "jvlm" reads as the flat-named config (jvlm's Transformers classes
    # are not used there).
    AutoConfig.register("jvlm", JinaVLMVllmConfig, exist_ok=True)
    try:  # vLLM's own table re-registers the class before every config load, so a later
        # registration of model_type "jvlm" (jvlm's Transformers integration) cannot displace it
        from vllm.transformers_utils.config import _CONFIG_REGISTRY

        _CONFIG_REGISTRY["jvlm"] = JinaVLMVllmConfig
    except (ImportError, AttributeError, TypeError):  # another vLLM version: AutoConfig alone
        pass
    AutoProcessor.register(JinaVLMVllmConfig, JinaVLMChatProcessor, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        # A "module:Class" string: vLLM imports the model lazily, in the worker that runs it.
        ModelRegistry.register_model(ARCHITECTURE, "jvlm.integrations.vllm.model:JinaVLMForConditionalGeneration")
