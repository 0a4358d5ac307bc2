"""A user's pretrained vector: the mean of the vectors of the items the user touched.

Recency matters most: on MovieLens the mean of the last 3-5 items beat the mean of the
whole history by ~65% (HR@50), so the default keeps the last `DEFAULT_LAST_N` items.
`last_n=None` takes the whole history; `half_life` weights items by exponential decay
in position (the newest item weighs 1, an item `half_life` steps older weighs 1/2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from finetower.vectors import Vectors

DEFAULT_LAST_N = 5


def history_weights(length: int, last_n: int | None, half_life: float | None) -> np.ndarray:
    """Weights [length] for a history ordered oldest to newest; they sum to 1."""
    weights = np.ones(length, dtype=np.float64)
    if last_n is not None:
        weights[: max(length - last_n, 0)] = 0.0
    if half_life is not None:
        age = np.arange(length - 1, -1, -1, dtype=np.float64)
        weights *= 0.5 ** (age / half_life)
    total = weights.sum()
    return weights / total if total > 0 else weights


def user_vector(
    item_vectors: Vectors,
    history: Sequence[str],
    *,
    last_n: int | None = DEFAULT_LAST_N,
    half_life: float | None = None,
    index: dict[str, int] | None = None,
) -> tuple[np.ndarray | None, list[str]]:
    """Return (user vector or None, unknown ids) for a history ordered oldest to newest.

    Unknown ids are dropped before `last_n` is applied, and returned so callers can count
    them; None means no item of the history has a vector.
    """
    index = index if index is not None else item_vectors.index()
    rows = [index.get(str(item)) for item in history]
    unknown = [str(item) for item, row in zip(history, rows, strict=True) if row is None]
    known = np.array([row for row in rows if row is not None], dtype=np.int64)
    if len(known) == 0:
        return None, unknown
    weights = history_weights(len(known), last_n, half_life).astype(np.float32)
    return weights @ item_vectors.vectors[known], unknown
