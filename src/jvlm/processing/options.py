"""Checks of the keyword options processors take: each one takes effect or raises.

Kept free of Transformers imports, so the Transformers classes can use it while Transformers
itself is being imported.
"""

from __future__ import annotations

from typing import Any

#: Hub options every ``from_pretrained`` here applies (``jvlm.resolve.resolve_model``'s).
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only")
#: Passed along by Transformers' auto classes and pipelines; nothing for a processor to do.
_LOAD_PLUMBING = frozenset({"trust_remote_code", "_from_auto", "_from_pipeline", "_commit_hash", "code_revision"})
#: The model's options, which ``pipeline()`` hands to every component: they take effect on the model.
_MODEL_OPTIONS = frozenset({"dtype", "torch_dtype", "device_map", "attn_implementation", "quantization_config"})


def hub_options(options: dict[str, Any], who: str) -> dict[str, Any]:
    """The hub options among a ``from_pretrained``'s keywords; any option that would have no
    effect raises ``TypeError`` naming it (rather than being dropped)."""
    ignorable = _LOAD_PLUMBING | (_MODEL_OPTIONS if options.get("_from_pipeline") else frozenset())
    unknown = sorted(k for k in options if k not in HUB_OPTIONS and k not in ignorable)
    if unknown:
        raise TypeError(f"{who}() got options jvlm does not support: {unknown}. Supported: "
                        f"{', '.join(HUB_OPTIONS)}")
    return {k: options[k] for k in HUB_OPTIONS if options.get(k) is not None}


def check_return_tensors(return_tensors: str | None) -> None:
    if return_tensors not in ("pt", "np", None):
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' (torch), 'np' or None "
                         "(numpy arrays)")
