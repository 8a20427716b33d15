"""A plain batched decoding loop over the model's KV cache (Transformers-style ``generate``)."""

from __future__ import annotations

import torch

from jvlm.inference.sampling import select_next


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return [int(i) for i in (x if isinstance(x, (list, tuple, set)) else [x])]


def generate_batch(model, input_ids: torch.Tensor, *, attention_mask=None, images=None, image_masks=None,
                   image_input_idx=None, max_new_tokens: int = 256, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, eos_token_id=None,
                   pad_token_id=None, seed: int | None = None, streamer=None,
                   banned_ids: list[int] | None = None) -> torch.Tensor:
    """(B, T) prompt ids -> (B, T + n) ids; rows that stop early are padded with ``pad_token_id``."""
    b, t = input_ids.shape
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = (input_ids != -1).long()  # the official processor pads with -1
    attention_mask = attention_mask.to(device).long()
    cfg = model.config
    eos = _as_list(eos_token_id) or _as_list(getattr(model, "stop_token_ids", None)) or _as_list(cfg.eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0))
    if images is not None:
        images = images.to(device)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    banned = torch.tensor(banned_ids if banned_ids is not None else getattr(model, "structural_token_ids", []) or [],
                          dtype=torch.long)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)

    cache = model.new_cache(b, t + max_new_tokens)
    out = model(input_ids, attention_mask=attention_mask, images=images, image_masks=image_masks,
                image_input_idx=image_input_idx, past_key_values=cache, logits_to_keep=1)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    new_tokens: list[torch.Tensor] = []
    if streamer is not None:
        streamer.put(input_ids.cpu())
    for _ in range(max_new_tokens):
        nxt = select_next(out.logits[:, -1], do_sample=do_sample, temperature=temperature, top_p=top_p,
                          top_k=top_k, generator=generator, banned=banned)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        new_tokens.append(nxt)
        if streamer is not None:
            streamer.put(nxt.cpu())
        if eos_t.numel():
            finished |= torch.isin(nxt, eos_t)
        if bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, (~finished).long()[:, None] | 1], dim=1)
        out = model(nxt[:, None], attention_mask=attention_mask, past_key_values=cache, logits_to_keep=1)
    if streamer is not None:
        streamer.end()
    if not new_tokens:
        return input_ids
    return torch.cat([input_ids, torch.stack(new_tokens, dim=1)], dim=1)
