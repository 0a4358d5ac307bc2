"""Negative items for each positive, never one of the user's own target items."""

from __future__ import annotations

import numpy as np

NEGATIVE_ROUNDS = 16
POPULARITY_EXPONENT = 0.75


def popularity_weights(train_counts: np.ndarray) -> np.ndarray:
    """Sampling weights of catalogue items: train counts ^ 0.75 (word2vec's smoothing)."""
    return train_counts.astype(np.float64) ** POPULARITY_EXPONENT


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    count: int,
    catalogue: np.ndarray,
    weights: np.ndarray | None,
    positive_keys: np.ndarray,
    stride: int,
) -> np.ndarray:
    """Return [len(users), count] item rows from `catalogue`, none a key in `positive_keys`.

    `positive_keys` (sorted) holds user * stride + item of every user's positives. Draws
    that hit one are redrawn in rounds; users left after the rounds (a catalogue mostly
    their own) get an exact draw from their complement, or -1 when it is empty.
    """
    p = None if weights is None else weights / weights.sum()
    owners = np.repeat(users, count)
    drawn = rng.choice(catalogue, size=len(owners), p=p)

    def hits(rows: np.ndarray) -> np.ndarray:
        keys = owners[rows] * stride + drawn[rows]
        found = np.searchsorted(positive_keys, keys)
        found = np.minimum(found, len(positive_keys) - 1)
        return positive_keys[found] == keys

    todo = np.arange(len(owners))
    for _ in range(NEGATIVE_ROUNDS):
        todo = todo[hits(todo)]
        if len(todo) == 0:
            return drawn.reshape(len(users), count)
        drawn[todo] = rng.choice(catalogue, size=len(todo), p=p)
    todo = todo[hits(todo)]
    for user in np.unique(owners[todo]):
        rows = todo[owners[todo] == user]
        own = (
            positive_keys[
                np.searchsorted(positive_keys, user * stride) : np.searchsorted(
                    positive_keys, (user + 1) * stride
                )
            ]
            - user * stride
        )
        allowed = ~np.isin(catalogue, own)
        mass = allowed if weights is None else allowed * weights
        if mass.sum() == 0:
            drawn[rows] = -1
        else:
            drawn[rows] = rng.choice(catalogue, size=len(rows), p=mass / mass.sum())
    return drawn.reshape(len(users), count)
