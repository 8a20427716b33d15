"""jvlm — Jina-VLM: a small multilingual vision-language model in PyTorch.

``jvlm.load(DIR)`` returns ``(model, processor)``. Importing jvlm also registers the model
with the Transformers auto classes when Transformers is installed, so
``AutoModelForCausalLM.from_pretrained(DIR)`` / ``AutoProcessor.from_pretrained(DIR)`` work.
"""

from __future__ import annotations

__version__ = "0.1.0"

from jvlm.config import JinaVLMConfig  # noqa: E402
from jvlm.errors import JVLMError  # noqa: E402


def load(folder, dtype=None, device=None, progress: bool = False):
    """``(model, processor)`` from a model folder (official safetensors layout)."""
    from jvlm.loading import load as _load

    return _load(folder, dtype=dtype, device=device, progress=progress)


def _register_with_transformers() -> None:
    try:
        from jvlm.hf import register
    except ImportError:  # transformers missing or too old: the plain API still works
        return
    register()


_register_with_transformers()

__all__ = ["JinaVLMConfig", "JVLMError", "load", "__version__"]
