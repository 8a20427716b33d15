"""Parameter groups, freezing, AdamW, the learning-rate schedule and activation checkpointing.

The recipe trains four parts at different speeds (spec §11): the pretrained ViT and decoder
slowly, the new connector and the 128 new embedding rows fast. Each part is a group with
its own learning rate, warmup and freeze flag. A frozen group gets ``requires_grad=False``
and is left out of the optimiser, so its tensors stay bit-identical (AdamW's decoupled
weight decay would otherwise still move them).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from jvlm.train.config import GROUPS, OptimConfig

log = logging.getLogger(__name__)

_NO_DECAY_SUFFIXES = ("embedding.embedding", "new_embedding", "pos_embed", "pad_embed")


def group_of(name: str) -> str:
    """The recipe group of an official-layout parameter name."""
    if name.startswith("model.vision_model.vl_connector."):
        return "connector"
    if name.startswith("model.vision_model."):
        return "vision"
    if name == "model.language_model.embedding.new_embedding":
        return "new_embeddings"
    if name.startswith(("model.language_model.", "lm_head.")):
        return "decoder"
    raise ValueError(f"parameter {name!r} belongs to no training group")


def unreachable_vision_params(model) -> set[str]:
    """ViT parameters that can never receive a gradient: blocks after the deepest tapped
    state (they are not even run) and the post-norm when it is not tapped."""
    v = model.cfg.vision
    used = v.n_layers_used()
    out = {f"model.vision_model.{n}" for n, _ in model.model.vision_model.named_parameters()
           if _layer_index(n) is not None and _layer_index(n) >= used}
    if v.n_layers not in v.tap_indices():
        out |= {f"model.vision_model.post_lnorm.{n}" for n, _ in model.model.vision_model.post_lnorm.named_parameters()}
    return out


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "layers" else None


def apply_freezing(model, cfg: OptimConfig) -> dict[str, int]:
    """Set requires_grad per group; returns trainable parameter counts per group."""
    dead = unreachable_vision_params(model)
    counts = {g: 0 for g in GROUPS}
    for name, p in model.named_parameters():
        g = group_of(name)
        train = not cfg.groups[g].freeze and name not in dead
        p.requires_grad_(train)
        counts[g] += p.numel() if train else 0
    return counts


def strip_wrappers(name: str) -> str:
    """Official name of a parameter seen through DDP / the loss wrapper / FSDP."""
    for prefix in ("module.", "_orig_mod.", "model_with_loss.", "vlm."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("._checkpoint_wrapped_module", "")


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters: one param group per (recipe group, decay or not)."""
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in named_params:
        if not p.requires_grad or id(p) in seen:  # frozen, or a tied head seen twice
            continue
        seen.add(id(p))
        official = strip_wrappers(name)
        decay = p.ndim >= 2 and not official.endswith(_NO_DECAY_SUFFIXES)
        buckets.setdefault((group_of(official), decay), []).append(p)
    groups = []
    for (g, decay), params in sorted(buckets.items()):
        gc = cfg.groups[g]
        wd = cfg.weight_decay if gc.weight_decay is None else gc.weight_decay
        groups.append({"params": params, "lr": gc.lr, "base_lr": gc.lr, "warmup_steps": gc.warmup_steps,
                       "weight_decay": wd if decay else 0.0, "group": g, "decay": decay})
    if not groups:
        raise ValueError("every parameter is frozen; unfreeze at least one of optim.groups")
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=cfg.betas, eps=cfg.eps)


class Schedule:
    """Per-group warmup then cosine / linear decay to ``min_lr_ratio`` at the last step.

    Stateless apart from the step, which the trainer stores, so resuming needs no
    scheduler state beyond it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, kind: str, min_lr_ratio: float):
        self.optimizer, self.total, self.kind, self.min_ratio = optimizer, total_steps, kind, min_lr_ratio

    def factor(self, step: int, warmup: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup  # the first update already moves (lr > 0)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup - 1))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1 - progress
        return self.min_ratio + (1 - self.min_ratio) * shape

    def apply(self, step: int) -> dict[str, float]:
        """Set every group's lr for update ``step`` (0-based); returns lr per recipe group."""
        lrs = {}
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * self.factor(step, g["warmup_steps"])
            lrs[g["group"]] = g["lr"]
        return lrs


def enable_activation_checkpointing(model) -> int:
    """Recompute each ViT and decoder block in the backward pass instead of storing its
    activations. Forwards are wrapped in place, so parameter names (and checkpoints) do not change."""
    blocks = list(model.model.vision_model.layers) + list(model.model.language_model.layers)
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)
    return len(blocks)


def _checkpointed(forward, *args):
    return checkpoint(forward, *args, use_reentrant=False)
