"""The running batch: which requests decode together, and their shared, left-padded KV cache.

Rows are right-aligned: every row's newest token sits in the last cache column, so one
decode step appends one column for everybody. Row ``i`` attends only where ``mask[i]`` is 1,
and the model takes its positions from the cumulative sum of that mask, so a row computes
what it would compute alone. Joining rows copies both caches into a new right-aligned one;
leaving rows are dropped with ``KVCache.select`` and columns nobody uses any more are cut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jvlm.model.text import KVCache


class RunningBatch:
    def __init__(self, new_cache: Callable[[int, int], KVCache]):
        self._new_cache = new_cache  # (batch, capacity) -> empty cache
        self.rows: list[Any] = []  # the engine's per-request records, in cache-row order
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None  # (B, S) long, 1 = a real key
        self.next_ids: torch.Tensor | None = None  # (B,) the last sampled ids, fed at the next step
        self.padded = False

    def __len__(self) -> int:
        return len(self.rows)

    def decode_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1) ids for the next step and the attention mask (None when no row is padded:
        the model then takes the plain causal path)."""
        b = len(self.rows)
        self.mask = torch.cat([self.mask, self.mask.new_ones((b, 1))], dim=1)  # (B, S + 1)
        self.cache.reserve(1)
        return self.next_ids[:, None], (self.mask if self.padded else None)

    def join(self, rows: list[Any], cache: KVCache, mask: torch.Tensor, next_ids: torch.Tensor,
             capacity: int) -> None:
        """Append rows prefilled in their own ``cache`` (key ``mask`` (b, s)); the merged cache
        gets room for ``capacity`` columns."""
        if not self.rows:
            self.rows, self.cache, self.mask, self.next_ids = list(rows), cache, mask, next_ids.clone()
            self.padded = not bool(mask.all())
            return
        old, new = self.cache, cache
        s = max(old.length, new.length)
        merged = self._new_cache(old.batch + new.batch, max(capacity, s))
        for src, part in ((old, slice(0, old.batch)), (new, slice(old.batch, None))):
            merged.fill(*src.filled(), rows=part, end=s)  # right-aligned

        def left_pad(m: torch.Tensor) -> torch.Tensor:
            return torch.cat([m.new_zeros((m.shape[0], s - m.shape[1])), m], dim=1)  # (b, s)

        self.mask = torch.cat([left_pad(self.mask), left_pad(mask)])
        self.cache = merged
        self.rows = self.rows + list(rows)
        self.next_ids = torch.cat([self.next_ids, next_ids])
        self.padded = not bool(self.mask.all())

    def drop(self, indices: list[int]) -> None:
        """Remove these rows; trim key columns that are now padding for every remaining row."""
        gone = set(indices)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.next_ids = None
            self.padded = False
            return
        self.cache.select(keep)
        idx = torch.tensor(keep, device=self.mask.device)
        self.mask, self.next_ids = self.mask[idx], self.next_ids[idx]
        lead = int(self.mask.any(0).long().argmax())  # first column someone still uses
        if lead > 0:
            self.cache.drop_front(lead)
            self.mask = self.mask[:, lead:]
        self.padded = not bool(self.mask.all())
