"""Transformers-style ``generate`` over padded batch tensors, run by the engine.

``jvlm.generate(model, **inputs)`` takes what the processor returns (left-padded ids, crops, positions) and
returns ``(B, prompt + new)`` ids. It unpacks the batch into one engine ``Request`` per row so
that there is a single decoding loop in the project.
"""

from __future__ import annotations

import torch

from jvlm.inference.request import ImageInput, Request, SamplingParams


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return [int(i) for i in (x if isinstance(x, (list, tuple, set)) else [x])]


def requests_from_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, images=None,
                        image_masks=None, image_input_idx=None, params: SamplingParams | None = None,
                        seed: int | None = None) -> list[Request]:
    """One request per row: padding stripped, image positions shifted back to the row's start."""
    params = params or SamplingParams()
    if attention_mask is None:
        attention_mask = (input_ids != -1).long()  # the official processor pads with -1
    out = []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool()
        start = int(keep.long().argmax()) if keep.any() else input_ids.shape[1]
        ids = input_ids[b, start:].tolist()
        inputs = []
        if images is not None and image_input_idx is not None:
            idx = image_input_idx[b].long()  # (T, K)
            real = (idx >= 0).any(-1)  # crop slots that feed at least one token
            if bool(real.any()):
                crops = images[b][real]  # (T_b, P, 588)
                masks = image_masks[b][real] if image_masks is not None else None
                rel = torch.where(idx[real] >= 0, idx[real] - start, torch.full_like(idx[real], -1))
                inputs.append(ImageInput(image_input_idx=rel.cpu().numpy(), crops=crops.float().cpu().numpy(),
                                         masks=None if masks is None else masks.float().cpu().numpy()))
        p = params if seed is None else SamplingParams(**{**params.__dict__, "seed": seed + b})
        out.append(Request(prompt_ids=ids, images=inputs, params=p))
    return out


def generate_batch(model, input_ids: torch.Tensor, *, attention_mask=None, images=None, image_masks=None,
                   image_input_idx=None, max_new_tokens: int = 256, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, eos_token_id=None,
                   pad_token_id=None, seed: int | None = None, streamer=None,
                   banned_ids: list[int] | None = None) -> torch.Tensor:
    """(B, T) prompt ids -> (B, T + n) ids; rows that stop early are padded with ``pad_token_id``."""
    from jvlm.inference.engine import Engine

    cfg = model.cfg
    eos = None if eos_token_id is None else _as_list(eos_token_id)  # [] = never stop early
    pad = pad_token_id if pad_token_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else 0)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                            top_p=top_p, top_k=top_k)
    requests = requests_from_batch(input_ids.cpu(), None if attention_mask is None else attention_mask.cpu(),
                                   images, image_masks, image_input_idx, params, seed)
    engine = Engine(model, None, max_batch_size=max(1, len(requests)), banned_token_ids=banned_ids,
                    stop_token_ids=eos)
    if streamer is not None:
        if len(requests) != 1:
            raise ValueError("a streamer needs a batch of one prompt")
        streamer.put(input_ids.cpu())
        new = []
        for ev in engine.stream(requests[0]):
            if ev.token_id is not None:
                new.append(ev.token_id)
                streamer.put(torch.tensor([ev.token_id]))
        streamer.end()
        rows = [new]
    else:
        rows = [r.token_ids for r in engine.generate_many(requests)]
    n = max((len(r) for r in rows), default=0)
    if n == 0:
        return input_ids
    new_ids = torch.full((len(rows), n), int(pad), dtype=input_ids.dtype)
    for i, r in enumerate(rows):
        new_ids[i, : len(r)] = torch.tensor(r, dtype=input_ids.dtype)
    return torch.cat([input_ids, new_ids.to(input_ids.device)], dim=1)
