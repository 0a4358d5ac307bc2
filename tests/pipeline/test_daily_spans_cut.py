"""The daily-spans benchmark's cut (components.sample_gen.split.daily_spans): by timestamp,
disjoint, ordered, about equal in size, ties kept together; on ml-100k and on a tiny log."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.common.errors import DataError
from components.sample_gen.movielens import load_movielens
from components.sample_gen.split import daily_spans


def _log(times: list[int]) -> pa.Table:
    return pa.table(
        {
            "user": pa.array([f"u{i % 3}" for i in range(len(times))]),
            "item": pa.array([f"i{i}" for i in range(len(times))]),
            "timestamp": pa.array(times, pa.int64()),
        }
    )


def test_spans_are_cut_by_time_disjoint_and_keep_ties_together():
    # shuffled times; the two 7s straddle the second cut by count: both go to the later span
    cut = daily_spans(_log([9, 1, 5, 7, 2, 8, 3, 7, 4, 6]), spans=3, events_per_span=3)
    assert [s["timestamp"].to_pylist() for s in cut.spans] == [[2, 3, 4], [5, 6], [9, 7, 8, 7]]
    assert cut.history["timestamp"].to_pylist() == [1]
    assert cut.starts == [2, 5, 7]


def test_ml100k_spans_are_consecutive_and_cover_the_tail(ml100k):
    log = load_movielens(ml100k)
    cut = daily_spans(log, spans=6, events_per_span=4000)
    parts = [cut.history, *cut.spans]
    assert sum(p.num_rows for p in parts) == log.num_rows
    for earlier, later in zip(parts, parts[1:], strict=False):
        assert earlier["timestamp"].to_numpy().max() < later["timestamp"].to_numpy().min()
    assert all(abs(s.num_rows - 4000) < 50 for s in cut.spans)
    keys = [
        (u, i)
        for s in cut.spans
        for u, i in zip(s["user"].to_pylist(), s["item"].to_pylist(), strict=True)
    ]
    assert len(keys) == len(set(keys))  # no rating in two spans
    assert np.all(np.diff(cut.starts) > 0)


def test_a_tail_longer_than_the_log_is_refused():
    with pytest.raises(DataError, match="need more than 12 events"):
        daily_spans(_log([1, 2, 3]), spans=3, events_per_span=4)
