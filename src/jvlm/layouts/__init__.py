"""Checkpoint layouts: one state-dict adapter per layout, and the registry that finds them.

Each module holds one layout's key table as data and a ``StateDictAdapter`` (``base``) that
maps its tensors to the official names (and back, for layouts jvlm writes). Loading code
converts through ``to_official``, naming the layout or letting the keys tell. Adding a
layout is one module with an ``ADAPTER`` and one entry in ``ADAPTERS``.
"""

from __future__ import annotations

from collections.abc import Iterable

from jvlm.config import JinaVLMConfig
from jvlm.errors import CheckpointError
from jvlm.layouts import mlx, official, parts
from jvlm.layouts.base import StateDict, StateDictAdapter

#: every known layout by name; detection tries them in this order and the first match wins
#: (a file with both official and MLX keys is read as official, and its strays are named)
ADAPTERS: dict[str, StateDictAdapter] = {a.name: a for a in (
    official.ADAPTER,
    mlx.ADAPTER,
    parts.ADAPTER,
)}


def get(name: str) -> StateDictAdapter:
    """The adapter of the layout called ``name``."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise CheckpointError(f"unknown checkpoint layout {name!r}; known layouts: {', '.join(ADAPTERS)}") from None


def detect(keys: Iterable[str]) -> StateDictAdapter:
    """The adapter of the layout that ``keys`` (a state dict's names) are in."""
    keys = list(keys)
    for adapter in ADAPTERS.values():
        if adapter.detect(keys):
            return adapter
    known = "; ".join(f"{a.name} ({', '.join(p + '*' for p in a.prefixes)})" for a in ADAPTERS.values())
    raise CheckpointError(f"unrecognised checkpoint layout: no key has the prefix of a known layout — {known}")


def to_official(sd: StateDict, cfg: JinaVLMConfig, layout: str | None = None) -> StateDict:
    """``sd`` under official names, read as ``layout`` or, when None, as the detected layout."""
    adapter = get(layout) if layout is not None else detect(sd)
    return adapter.to_official(sd, cfg)


__all__ = ["ADAPTERS", "StateDict", "StateDictAdapter", "detect", "get", "to_official"]
