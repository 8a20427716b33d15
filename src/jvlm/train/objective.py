"""The training objective: summed next-token cross-entropy over assistant tokens.

The loss of an optimiser step is the sum over every target token of the global batch,
divided by the number of those tokens. Summing here and dividing once by the global count
makes the gradient independent of how the batch is split into micro-batches and processes:
a 2-process run computes the same update as a 1-process run with the same global batch.

Logits are computed only at positions that have a label. The release's lm_head has 151,936
rows, so full-sequence logits would dominate memory for long image prompts.
"""

from __future__ import annotations

import torch
from torch import nn

from jvlm.model.loss import next_token_loss


class ModelWithLoss(nn.Module):
    """Wraps the VLM so that DDP / FSDP see one module whose forward returns the loss sum.

    ``touch_all``: in a multi-process run every rank must run every sharded module and
    produce a gradient for every trainable tensor in every micro-batch, or the collective
    operations of DDP and FSDP disagree between ranks. A micro-batch without images then
    runs the ViT on one padding crop, and the new embedding rows (only read when their ids
    occur) are touched; both enter the loss multiplied by zero, so the update is unchanged.
    """

    def __init__(self, vlm: nn.Module, touch_all: bool = False):
        super().__init__()
        self.vlm = vlm
        self.touch_all = touch_all

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                images: torch.Tensor | None = None, image_masks: torch.Tensor | None = None,
                image_input_idx: torch.Tensor | None = None) -> torch.Tensor:
        core = self.vlm.model
        zero = None
        feats = None
        if images is not None:
            feats = core.image_features(images, image_masks)  # (B, T, tokens, hidden)
        elif self.touch_all and self._vision_trainable():
            v = self.vlm.cfg.vision
            pad = torch.full((1, 1, v.n_patches, v.patch_dim), -1.0, device=input_ids.device)
            zero = core.image_features(pad, torch.zeros(pad.shape[:3], device=input_ids.device)).sum() * 0.0
        embeds = core.embed(input_ids, image_features=feats, image_input_idx=image_input_idx)  # (B, L, H)
        hidden = core.language_model(embeds, attention_mask)  # (B, L, H)
        keep = labels >= 0
        logits = self.vlm.lm_head(hidden[keep])  # (N_targets, vocab)
        loss = next_token_loss(logits, labels[keep], reduction="sum")
        if self.touch_all:
            new_rows = core.language_model.embedding.new_embedding
            if new_rows.requires_grad:
                loss = loss + new_rows.sum() * 0.0
            if zero is not None:
                loss = loss + zero
        return loss

    def _vision_trainable(self) -> bool:
        return any(p.requires_grad for p in self.vlm.model.vision_model.parameters())
