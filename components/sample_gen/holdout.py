"""Which target events are held out: split by time per user, or at random."""

from __future__ import annotations

import numpy as np

from components.sample_gen.config import SampleConfig


def split_events(
    user_codes: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Return (split [n]: 0 train, 1 val, 2 test; users holding out fewer than asked).

    `user_codes` must be sorted with each user's events oldest first.
    """
    val, test = config.holdout
    n = len(user_codes)
    if config.split == "random":
        draw = rng.random(n)
        return np.where(draw < test, 2, np.where(draw < test + val, 1, 0)).astype(np.int8), 0
    starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(n)
    held = np.minimum(lengths - 1, int(val + test))
    n_test = np.minimum(held, int(test))
    held, n_test = np.repeat(held, lengths), np.repeat(n_test, lengths)
    split = np.where(from_end < n_test, 2, np.where(from_end < held, 1, 0)).astype(np.int8)
    return split, int((lengths - 1 < val + test).sum())
