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
