"""Which row comes next: exact text-only share, weighted sources, and curriculum phases.

The paper keeps the decoder's text skills by mixing text-only data into every stage (15%
in stage 1; spec §11). A random draw with probability 0.15 only gets near 15% on average;
this sampler makes it exact at every point of a run instead:

1. **Category.** After ``n`` samples of a phase with ``t`` text-only ones, the next sample is
   text-only iff ``round(share * (n + 1)) > t``. The realised count never differs from
   ``share * n`` by more than half a sample.
2. **Source** within the category: smooth weighted round-robin over the sources' weights,
   again exact up to one sample per source.
3. **Row** within (source, category): a fresh seeded permutation every epoch of that pool.

Without a configured share the category is not steered: sources are picked by weight
and rows uniformly within a source, so the text-only share is whatever the data holds.

A curriculum is a list of phases, each with its own source weights (stage 2: one source at
a time, then everything mixed). Counters restart with each phase. The whole state is a few
integers per pool, stored in every checkpoint, so a resumed run draws the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jvlm.errors import TrainConfigError, TrainDataError
from jvlm.train.data import IMAGE, TEXT, SourceIndex


@dataclass(frozen=True)
class SampleRef:
    source: int  # index into the sampler's sources
    category: int  # TEXT or IMAGE
    row: int  # index within that source's rows of that category


@dataclass
class Phase:
    name: str
    start: int  # first optimiser step of the phase
    end: int | None  # first step after it; None = to the end of the run
    weights: list[float]  # per source; 0 = not used in this phase
    text_only_share: float | None


class _Pool:
    """Rows of one (source, category), served in a new seeded order every epoch."""

    def __init__(self, n: int, seed: int, source: int, category: int, name: str):
        self.n, self.key, self.name = n, (seed, source, category), name
        self.epoch, self.pos = 0, 0
        self._perm: np.ndarray | None = None

    def _order(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng([*self.key, self.epoch]).permutation(self.n)
        return self._perm

    def next(self, bad: set[tuple[int, int, int]]) -> int:
        source, category = self.key[1], self.key[2]
        for _ in range(self.n + 1):
            if self.pos >= self.n:
                self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
            row = int(self._order()[self.pos])
            self.pos += 1
            if (source, category, row) not in bad:
                return row
        kind = "text-only" if category == TEXT else "image"
        raise TrainDataError(f"every {kind} row of data source {self.name!r} was skipped as bad; see the "
                             "warnings above for the reasons")


class MixingSampler:
    def __init__(self, sources: list[SourceIndex], phases: list[Phase], seed: int):
        self.sources, self.phases = sources, phases
        self.pools = {(s, c): _Pool(src.count(c), seed, s, c, src.name)
                      for s, src in enumerate(sources) for c in (TEXT, IMAGE)}
        self.bad: set[tuple[int, int, int]] = set()
        self.phase_index = -1
        self.n_phase = self.t_phase = 0  # samples / text-only samples in the current phase
        self.n_run = self.t_run = 0
        self.per_source = [0] * len(sources)
        self._current: dict[Any, list[float]] = {}
        for ph in phases:
            self._check_phase(ph)

    # ------------------------------------------------------------- phases
    def _check_phase(self, ph: Phase) -> None:
        names = [s.name for s in self.sources]
        used = [s for s, w in enumerate(ph.weights) if w > 0]
        n_text = sum(self.sources[s].count(TEXT) for s in used)
        n_img = sum(self.sources[s].count(IMAGE) for s in used)
        if n_text + n_img == 0:
            raise TrainDataError(f"phase {ph.name!r}: its sources {[names[s] for s in used]} hold no usable rows")
        share = ph.text_only_share
        if share is not None and share > 0 and n_text == 0:
            raise TrainConfigError(
                f"phase {ph.name!r} asks for a text-only share of {share:.0%} but its sources "
                f"{[names[s] for s in used]} hold no text-only rows; add a text-only source or set text_only_share: null"
            )
        if share is not None and share < 1 and n_img == 0:
            raise TrainConfigError(
                f"phase {ph.name!r} asks for {1 - share:.0%} image rows but its sources hold none; "
                "set text_only_share: 1.0 or add an image source"
            )

    def set_step(self, step: int) -> Phase:
        """Enter the phase that covers optimiser step ``step`` (counters restart on a change)."""
        idx = next((i for i, ph in enumerate(self.phases) if ph.end is None or step < ph.end), len(self.phases) - 1)
        if idx != self.phase_index:
            self.phase_index, self.n_phase, self.t_phase, self._current = idx, 0, 0, {}
        return self.phases[idx]

    @property
    def phase(self) -> Phase:
        return self.phases[max(self.phase_index, 0)]

    # ------------------------------------------------------------- drawing
    def draw(self) -> SampleRef:
        ph = self.phase
        share = ph.text_only_share
        if share is None:
            # Sources by weight; rows uniform within a source (category in proportion to its rows).
            cands = [((s, c), ph.weights[s] * src.count(c) / max(src.count(TEXT) + src.count(IMAGE), 1))
                     for s, src in enumerate(self.sources) for c in (TEXT, IMAGE)]
            s, category = self._round_robin("all", cands)
        else:
            category = TEXT if int(np.floor(share * (self.n_phase + 1) + 0.5)) > self.t_phase else IMAGE
            cands = [(s, ph.weights[s]) for s, src in enumerate(self.sources) if src.count(category)]
            s = self._round_robin(category, cands)
        row = self.pools[(s, category)].next(self.bad)
        self.n_phase += 1
        self.n_run += 1
        self.t_phase += category == TEXT
        self.t_run += category == TEXT
        self.per_source[s] += 1
        return SampleRef(s, category, row)

    def replace(self, ref: SampleRef) -> SampleRef:
        """A bad row: mark it and take the next row of the same source and category, so the
        mixing counters (already charged for this sample) stay exact."""
        self.bad.add((ref.source, ref.category, ref.row))
        return SampleRef(ref.source, ref.category, self.pools[(ref.source, ref.category)].next(self.bad))

    def _round_robin(self, key, cands: list[tuple[Any, float]]):
        """Smooth weighted round-robin: add each weight, pick the largest, subtract the total."""
        cands = [(k, w) for k, w in cands if w > 0]
        if not cands:
            raise TrainDataError(f"phase {self.phase.name!r}: no source has rows of the requested kind")
        cur = self._current.setdefault(key, {})
        total = sum(w for _, w in cands)
        for k, w in cands:
            cur[k] = cur.get(k, 0.0) + w
        best = max(cands, key=lambda kw: cur[kw[0]])[0]  # ties: the first candidate
        cur[best] -= total
        return best

    # ------------------------------------------------------------- stats + state
    def shares(self) -> dict[str, float]:
        return {"text_only_share_phase": self.t_phase / max(self.n_phase, 1),
                "text_only_share_run": self.t_run / max(self.n_run, 1)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "phase_index": self.phase_index, "n_phase": self.n_phase, "t_phase": self.t_phase,
            "n_run": self.n_run, "t_run": self.t_run, "per_source": list(self.per_source),
            "pools": [[s, c, p.epoch, p.pos] for (s, c), p in self.pools.items()],
            "bad": sorted(list(b) for b in self.bad),
            "current": [[_key_to_json(k), [[_key_to_json(kk), v] for kk, v in d.items()]]
                        for k, d in self._current.items()],
            "pool_sizes": [[s, c, p.n] for (s, c), p in self.pools.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sizes = {(s, c): n for s, c, n in state["pool_sizes"]}
        now = {k: p.n for k, p in self.pools.items()}
        if sizes != now:
            raise TrainDataError(
                "the data files changed since the checkpoint (row counts differ), so the run cannot continue "
                "exactly; restore the files or start a new run"
            )
        self.phase_index, self.n_phase, self.t_phase = state["phase_index"], state["n_phase"], state["t_phase"]
        self.n_run, self.t_run, self.per_source = state["n_run"], state["t_run"], list(state["per_source"])
        for s, c, epoch, pos in state["pools"]:
            pool = self.pools[(s, c)]
            pool.epoch, pool.pos, pool._perm = epoch, pos, None
        self.bad = {tuple(b) for b in state["bad"]}
        self._current = {_key_from_json(k): {_key_from_json(kk): v for kk, v in d} for k, d in state["current"]}


def _key_to_json(k):
    return list(k) if isinstance(k, tuple) else k


def _key_from_json(k):
    return tuple(k) if isinstance(k, list) else k


def build_phases(phase_cfgs, source_names: list[str], total_steps: int, shares: list[float | None]) -> list[Phase]:
    """Phase configs (steps per phase) -> Phases with absolute step ranges."""
    out, start = [], 0
    for cfg, share in zip(phase_cfgs, shares):
        end = None if cfg.steps is None else start + cfg.steps
        weights = [float(cfg.weights.get(n, 0.0)) for n in source_names]
        out.append(Phase(cfg.name, start, end, weights, share))
        start = end if end is not None else total_steps
    if out and out[-1].end is not None and out[-1].end < total_steps:
        out[-1].end = None  # the last phase runs to the end of the run
    return out
