"""The mixing sampler: exact text-only share, source weights, curriculum phases, resumable state."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jvlm.errors import TrainConfigError
from jvlm.train.data import TEXT, SourceIndex
from jvlm.train.mixing import MixingSampler, Phase


def _source(name: str, n_text: int, n_image: int) -> SourceIndex:
    """An index without a file: the sampler only needs row counts."""
    arr = [np.arange(n_text, dtype=np.int64), np.arange(n_image, dtype=np.int64)]
    return SourceIndex(name, Path(f"/nonexistent/{name}.jsonl"), arr, arr, [a.astype(np.int32) for a in arr])


SOURCES = [_source("captions", 0, 50), _source("docs", 0, 30), _source("text", 20, 0)]


def _phase(weights, share, start=0, end=None, name="p"):
    return Phase(name, start, end, weights, share)


def test_text_only_share_is_exact_at_every_point_of_the_run():
    s = MixingSampler(SOURCES, [_phase([1.0, 1.0, 1.0], 0.15)], seed=0)
    s.set_step(0)
    n_text = 0
    for n in range(1, 2001):
        n_text += s.draw().category == TEXT
        assert abs(n_text - 0.15 * n) <= 0.5  # never more than half a sample off
    assert abs(s.shares()["text_only_share_run"] - 0.15) < 0.01


def test_sources_within_a_category_follow_their_weights():
    s = MixingSampler(SOURCES, [_phase([3.0, 1.0, 1.0], 0.2)], seed=0)
    s.set_step(0)
    counts = Counter(s.draw().source for _ in range(1000))
    assert counts[2] == 200  # the only text-only source takes the whole 20%
    assert abs(counts[0] - 600) <= 1 and abs(counts[1] - 200) <= 1  # 3:1 of the other 80%


def test_without_a_share_sources_are_mixed_by_weight_alone():
    s = MixingSampler(SOURCES, [_phase([1.0, 1.0, 2.0], None)], seed=0)
    s.set_step(0)
    counts = Counter(s.draw().source for _ in range(400))
    assert [counts[i] for i in range(3)] == [100, 100, 200]


def test_rows_cover_each_pool_once_per_epoch_in_a_seeded_order():
    a = MixingSampler(SOURCES, [_phase([1.0, 0.0, 0.0], 0.0)], seed=1)
    b = MixingSampler(SOURCES, [_phase([1.0, 0.0, 0.0], 0.0)], seed=2)
    a.set_step(0), b.set_step(0)
    rows_a = [a.draw().row for _ in range(50)]
    rows_b = [b.draw().row for _ in range(50)]
    assert sorted(rows_a) == list(range(50))  # an epoch is a permutation
    assert rows_a != rows_b  # the seed decides the order


def test_curriculum_runs_single_source_phases_then_the_mix():
    phases = [_phase([1.0, 0.0, 1.0], 0.1, 0, 2, "captions-only"), _phase([0.0, 1.0, 1.0], 0.1, 2, 4, "docs-only"),
              _phase([1.0, 1.0, 1.0], 0.1, 4, None, "mixed")]
    s = MixingSampler(SOURCES, phases, seed=0)
    seen = {}
    for step in range(6):
        ph = s.set_step(step)
        seen.setdefault(ph.name, set()).update(s.draw().source for _ in range(20))
    assert seen == {"captions-only": {0, 2}, "docs-only": {1, 2}, "mixed": {0, 1, 2}}


def test_state_round_trip_continues_the_same_sequence():
    phases = [_phase([1.0, 2.0, 1.0], 0.15, 0, 3), _phase([1.0, 1.0, 1.0], 0.3, 3, None)]
    a = MixingSampler(SOURCES, phases, seed=0)
    for step in range(4):
        a.set_step(step)
        for _ in range(7):
            a.draw()
    a.replace(a.draw())  # a bad row is part of the state
    state = a.state_dict()
    b = MixingSampler(SOURCES, phases, seed=0)
    b.load_state_dict(state)
    for step in range(4, 9):
        a.set_step(step), b.set_step(step)
        assert [a.draw() for _ in range(7)] == [b.draw() for _ in range(7)]


def test_a_bad_row_is_replaced_from_the_same_pool_and_never_drawn_again():
    s = MixingSampler([_source("tiny", 0, 3)], [_phase([1.0], 0.0)], seed=0)
    s.set_step(0)
    first = s.draw()
    repl = s.replace(first)
    assert (repl.source, repl.category) == (first.source, first.category) and repl.row != first.row
    assert all(s.draw().row != first.row for _ in range(12))
    assert s.shares()["text_only_share_run"] == 0.0


def test_a_share_that_the_data_cannot_give_is_refused():
    with pytest.raises(TrainConfigError, match="no text-only rows"):
        MixingSampler(SOURCES, [_phase([1.0, 1.0, 0.0], 0.15)], seed=0)


def test_a_source_with_only_bad_rows_stops_the_run_with_its_name():
    from jvlm.errors import TrainDataError

    s = MixingSampler([_source("broken", 0, 2)], [_phase([1.0], 0.0)], seed=0)
    s.set_step(0)
    ref = s.draw()
    ref = s.replace(ref)
    with pytest.raises(TrainDataError, match="'broken'"):
        s.replace(ref)
