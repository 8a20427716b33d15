"""The one next-token loss: cross-entropy over the positions that have a target.

``labels`` are aligned with the logits (label[t] is the token after input[t]). A negative
label is padding or a prompt token; an id past ``lm_head`` (the structural image tokens,
whose rows live only in the input embedding) can never be predicted. Neither carries loss.

``reduction="mean"`` is what ``model(..., labels=...)`` reports (the Transformers convention);
training uses ``"sum"`` and divides once by the global number of targets, so that the update
does not depend on how a batch is split into micro-batches and processes
(``jvlm.train.objective``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` (..., vocab) against ``labels`` (...), in float32."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    vocab = logits.shape[-1]
    target = labels.to(logits.device).long().reshape(-1)  # (N,)
    target = target.masked_fill((target < 0) | (target >= vocab), IGNORE_INDEX)
    return F.cross_entropy(logits.float().reshape(-1, vocab), target, ignore_index=IGNORE_INDEX,
                           reduction=reduction)
