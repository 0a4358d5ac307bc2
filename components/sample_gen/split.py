"""A transfer split of one interaction log into a data-rich source and a sparse target.

For a log with a single domain (MovieLens), make the recipe's setting out of it:
    eligible = events at or after the `target_after` quantile of all timestamps
    target   = each eligible event with probability `target_rate` (seeded coin flips)
    source   = every other event, including eligible events that lost the flip
So `target_after=0.8, target_rate=0.2` puts a fifth of the last fifth of time in the
target; `target_after=0` samples over all time, `target_rate=1` cuts by time alone.
Source events after the target starts stay in the source, as the big app keeps running;
sample building only ever uses the ones before each sample's time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from components.common.errors import DataError


@dataclass
class TransferSplit:
    """The two logs and the time at which the target begins."""

    source: pa.Table
    target: pa.Table
    target_start: int


def transfer_split(
    log: pa.Table, *, target_after: float = 0.8, target_rate: float = 0.2, seed: int = 0
) -> TransferSplit:
    """Split `log` (columns user, item, timestamp, ...) into source and target; row order kept."""
    if not 0.0 <= target_after < 1.0:
        raise ValueError(f"target_after must be a quantile in [0, 1), got {target_after}")
    if not 0.0 < target_rate <= 1.0:
        raise ValueError(f"target_rate must be in (0, 1], got {target_rate}")
    timestamps = log["timestamp"].to_numpy()
    target_start = int(np.quantile(timestamps, target_after, method="lower"))
    flips = np.random.default_rng(seed).random(len(timestamps)) < target_rate
    in_target = (timestamps >= target_start) & flips
    if not in_target.any():
        raise DataError(
            f"the target domain is empty: no event at or after {target_start} won the "
            f"{target_rate} coin flip; raise target_rate or lower target_after"
        )
    return TransferSplit(
        source=log.filter(pa.array(~in_target)),
        target=log.filter(pa.array(in_target)),
        target_start=target_start,
    )


@dataclass
class DailySpans:
    """A log's tail cut by time into consecutive spans ("days"), and what came before them."""

    history: pa.Table  # every event before the first span
    spans: list[pa.Table]  # span 1..n, oldest first
    starts: list[int]  # the first timestamp of each span


def daily_spans(log: pa.Table, *, spans: int, events_per_span: int) -> DailySpans:
    """Cut the last `spans * events_per_span` events of `log` by timestamp into `spans`
    consecutive spans of about `events_per_span` events each; row order kept within each.

    A span is every event from its start time up to the next span's start: events sharing a
    timestamp stay in one span (the later one), so spans are disjoint and ordered in time.
    Equal event counts rather than calendar days: a calendar day of ml-100k holds 36-1,197
    ratings by about ten users, too few for a retrieval metric per day.
    """
    if spans < 1 or events_per_span < 1:
        raise ValueError(f"spans and events_per_span must be >= 1, got {spans}, {events_per_span}")
    timestamps = log["timestamp"].to_numpy()
    first = len(timestamps) - spans * events_per_span
    if first < 1:
        raise DataError(
            f"{spans} spans of {events_per_span} events need more than "
            f"{spans * events_per_span} events before them; the log has {len(timestamps)}"
        )
    ordered = np.sort(timestamps)
    starts = [int(ordered[first + i * events_per_span]) for i in range(spans)]
    if len(set(starts)) < spans:
        raise DataError(f"spans of {events_per_span} events fall within one timestamp")
    # span code of each event: -1 before the first span, then 0..spans-1
    codes = np.searchsorted(np.asarray(starts), timestamps, side="right") - 1
    return DailySpans(
        history=log.filter(pa.array(codes < 0)),
        spans=[log.filter(pa.array(codes == i)) for i in range(spans)],
        starts=starts,
    )
