"""Next-token selection: pure functions over a (B, V) logits tensor.

Every filter keeps the most likely token, whatever the settings: a ``top_p`` that rounds to
zero against float32 probabilities, a ``top_k`` of 1 on a row of ties, or a temperature so
small that dividing by it overflows all leave at least that one token, so sampling always
has something to draw and degrades to greedy instead of failing.
"""

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
        drop[..., 0] = False  # top_p may round to 0 in float32; the best token always stays
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
    best = logits.argmax(-1)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = logits.softmax(-1)
    usable = torch.isfinite(probs).all(-1) & (probs.sum(-1) > 0)
    if not bool(usable.all()):  # e.g. a temperature so small that logits / temperature overflows
        probs = torch.where(usable[:, None], probs, torch.nn.functional.one_hot(best, probs.shape[-1]).float())
        probs = torch.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def sample_rows(logits: torch.Tensor, params: list, generators: list[torch.Generator | None],
                banned: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) ids for a batch whose rows have their own settings.

    Greedy rows share one argmax; each sampled row draws with its own generator, so a seeded
    request gets the same answer whatever else shares the batch. ``params[i]`` needs
    ``greedy``, ``temperature``, ``top_p`` and ``top_k`` (a ``SamplingParams``).
    """
    logits = logits.float()
    if banned is not None and banned.numel():
        keep = banned[banned < logits.shape[-1]]
        logits = logits.index_fill(-1, keep.to(logits.device), float("-inf"))
    nxt = logits.argmax(-1)
    for i, p in enumerate(params):
        if not p.greedy:
            nxt[i] = select_next(logits[i:i + 1], do_sample=True, temperature=p.temperature, top_p=p.top_p,
                                 top_k=p.top_k, generator=generators[i])[0]
    return nxt
