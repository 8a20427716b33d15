"""jvlm — Jina-VLM: a small multilingual vision-language model in PyTorch.

``jvlm.load(DIR)`` returns ``(model, processor)``; ``jvlm.generate(model, **inputs)`` decodes. Importing jvlm also registers the model
with the Transformers auto classes when Transformers is installed, so
``AutoModelForCausalLM.from_pretrained(DIR)`` / ``AutoProcessor.from_pretrained(DIR)`` work.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

from jvlm.config import JinaVLMConfig  # noqa: E402
from jvlm.errors import JVLMError  # noqa: E402


def load(folder, dtype=None, device=None, progress: bool = False):
    """``(model, processor)`` from a model folder (official safetensors layout), a bundled
    name (``jvlm-demo``) or a Hugging Face repo id (cache first, else downloaded)."""
    from jvlm.loading import load as _load

    return _load(folder, dtype=dtype, device=device, progress=progress)


def generate(model, input_ids, **kwargs):
    """Transformers-style ``generate`` for a model from ``jvlm.load``: the processor's batch in,
    ``(B, prompt + new)`` token ids out, decoded by the engine (``jvlm.inference``). Options:
    ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``eos_token_id``,
    ``pad_token_id``, ``seed``, ``streamer``."""
    from jvlm.inference.generate import generate_batch

    return generate_batch(model, input_ids, **kwargs)


def resolve_model(name):
    """The local folder a model name means: a folder, a bundled name (``jvlm-demo``), or a
    Hugging Face repo id (from the cache, else downloaded). See ``jvlm.resolve``."""
    from jvlm.resolve import resolve_model as _resolve

    return _resolve(name).path


def _register_with_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:  # transformers missing: the plain API still works
        return
    # Importable at any point of jvlm's own import (it needs no jvlm module that imports
    # Transformers), so registering does not fail half-way. An unsupported Transformers
    # (pyproject.toml names the range) is reported, and the plain API keeps working.
    pending = sys.modules.get("jvlm.integrations.transformers")
    if pending is not None and not hasattr(pending, "register"):
        return  # that module is being imported right now and registers itself at its end
    try:
        from jvlm.integrations.transformers import register

        register()
    except Exception as e:  # noqa: BLE001 - never break `import jvlm` over the auto classes
        import logging

        logging.getLogger("jvlm").warning(
            "jvlm could not register with Transformers %s (%s: %s); AutoModelForCausalLM/AutoProcessor will "
            "not know model_type 'jvlm'. jvlm.load() still works. Supported: transformers>=5.5,<6",
            getattr(sys.modules.get("transformers"), "__version__", "?"), type(e).__name__, e)


class _RegisterOnImport:
    """Register with Transformers the moment it is imported, not before.

    Importing Transformers costs seconds; the CLI and the server never need it, while a
    user of ``AutoModelForCausalLM`` imports it anyway. This finder watches for that import.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        import importlib.machinery

        sys.meta_path.remove(self)  # one shot; find the real spec with the other finders
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _register_with_transformers()

        loader.exec_module = exec_module
        return spec


def _defer_transformers_registration() -> None:
    """Stop registering on Transformers' import (the ``jvlm`` command calls this first).

    The command's tokenizer class comes from Transformers, so the command imports it, but it
    never uses the auto classes; registering them imports Transformers' processing stack,
    about 2 s of the README command's start. Code that does use them calls
    ``_register_with_transformers()`` itself (idempotent).
    """
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterOnImport)]


if "transformers" in sys.modules:
    _register_with_transformers()
else:
    sys.meta_path.insert(0, _RegisterOnImport())

__all__ = ["JinaVLMConfig", "JVLMError", "load", "resolve_model", "__version__"]
