"""What a checkpoint layout is to the loader: a named adapter between its key names and ours.

The official layout is our module tree's own ``state_dict()``. Every other layout converts
into it before ``weights.check_state_dict`` runs, so one strict check names every missing,
unexpected or mis-shaped tensor whatever layout the file was in. A layout jvlm also writes
converts back with ``from_official``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch

from jvlm.config import JinaVLMConfig
from jvlm.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


class StateDictAdapter(ABC):
    """One checkpoint layout: how to recognise its keys and how to map them to official ones."""

    #: the name the registry (``jvlm.layouts.get``) knows the layout by
    name: str
    #: key prefixes that only this layout's checkpoints have; ``detect`` looks for them
    prefixes: tuple[str, ...]
    #: whether ``from_official`` is implemented (jvlm writes this layout)
    writes: bool = False

    def detect(self, keys: Iterable[str]) -> bool:
        """True when any key carries one of this layout's prefixes."""
        return any(k.startswith(self.prefixes) for k in keys)

    @abstractmethod
    def to_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        """This layout's tensors under official names, for a model of ``cfg``.

        Tensors the layout cannot place keep their names, so the strict check reports them
        as unexpected rather than dropping them; a layout with its own notion of "complete"
        raises ``CheckpointError`` naming every missing or unused tensor.
        """

    def from_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        """Official tensors under this layout's names (only for layouts with ``writes``)."""
        raise CheckpointError(f"the {self.name!r} checkpoint layout can be read but not written")
