"""Next-token selection: pure functions over a (B, V) logits tensor."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (with -inf) everything outside the top-k and the top-p nucleus. (B, V) -> (B, V)."""
    logits = logits.float()
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass strictly before it already reaches top_p (the best stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def select_next(logits: torch.Tensor, *, do_sample: bool = False, temperature: float = 1.0,
                top_p: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None,
                banned: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) next ids. Greedy unless ``do_sample`` and temperature > 0.

    ``banned`` ids (e.g. the structural image tokens) can never be chosen.
    """
    logits = logits.float()
    if banned is not None and banned.numel():
        keep = banned[banned < logits.shape[-1]]
        logits = logits.index_fill(-1, keep.to(logits.device), float("-inf"))
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
