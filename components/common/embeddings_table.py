"""The item embeddings table (`embeddings.parquet`: `item_id` string, `embedding` list<float32>):
its schema and how it turns into ids and a [n, d] matrix. No TensorFlow here: the recall
service reads it too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.common.errors import ArtifactError

EMBEDDINGS_SCHEMA = pa.schema([("item_id", pa.string()), ("embedding", pa.list_(pa.float32()))])
COLUMNS = ["item_id", "embedding"]


def ids_and_embeddings(table: pa.Table, where: str) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings [n, d] float32, C-contiguous) of an embeddings table read from `where`."""
    n = table.num_rows
    if n == 0:
        raise ArtifactError(f"{where} holds no items")
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise ArtifactError(f"{where}: embeddings of unequal length")
    return table.column("item_id").to_pylist(), np.ascontiguousarray(flat.reshape(n, -1))
