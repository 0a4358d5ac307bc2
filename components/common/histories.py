"""User vectors at query times from a histories table (user, item, timestamp): what sample
building and retrieval evaluation share, so neither imports the other."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.common.user_vectors import DEFAULT_LAST_N, HistoryIndex
from components.common.vectors import Vectors


def query_user_vectors(
    histories: pa.Table,
    item_vectors: Vectors,
    users: list[str] | pa.Array,
    times: np.ndarray,
    *,
    last_n: int | None = DEFAULT_LAST_N,
    half_life: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """User vectors at query times from a `histories.parquet` table: (vectors, has_history)."""
    vocabulary = pc.unique(pa.concat_arrays([histories["user"].combine_chunks(), pa.array(users)]))
    rows = rows_of(histories["item"], item_vectors)
    known = rows >= 0
    index = HistoryIndex(
        codes(histories["user"], vocabulary)[known],
        rows[known],
        histories["timestamp"].to_numpy()[known],
        len(vocabulary),
    )
    return index.user_vectors(
        item_vectors.vectors,
        codes(pa.array(users), vocabulary),
        np.asarray(times, np.int64),
        last_n=last_n,
        half_life=half_life,
    )


def codes(column: pa.Array | pa.ChunkedArray, vocabulary: pa.Array) -> np.ndarray:
    return pc.index_in(column, value_set=vocabulary).to_numpy(zero_copy_only=False).astype(np.int64)


def rows_of(items: pa.Array | pa.ChunkedArray, vectors: Vectors) -> np.ndarray:
    """Row of each item id in `vectors`, -1 when it has none."""
    rows = pc.index_in(items, value_set=pa.array(vectors.ids, pa.string()))
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)
