"""The item embeddings table (`embeddings.parquet`: `item_id` string, `embedding` list<float32>):
its schema and how it turns into ids and a [n, d] matrix. No TensorFlow here: the recall
service reads it too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common.errors import ArtifactError

EMBEDDINGS_SCHEMA = pa.schema([("item_id", pa.string()), ("embedding", pa.list_(pa.float32()))])
COLUMNS = ["item_id", "embedding"]


READ_ROWS = 65536


def read_ids_and_embeddings(source, where: str) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings [n, d] float32, C-contiguous) of an embeddings Parquet file (`source`:
    a path or a binary file; `where` names it in errors), read `READ_ROWS` rows at a time into
    one array sized from the file's metadata: no whole table, no combined copy of it (at a
    million 64-d items, 0.66 GB stayed resident that way, 0.51 GB this way, 0.26 GB of it
    the embeddings)."""
    parquet = pq.ParquetFile(source)
    n = parquet.metadata.num_rows
    if n == 0:
        raise ArtifactError(f"{where} holds no items")
    ids: list[str] = []
    embeddings: np.ndarray | None = None
    for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=COLUMNS):
        column = batch.column("embedding")
        lengths = np.diff(column.offsets.to_numpy())
        dim = int(lengths[0]) if len(lengths) else 0
        if embeddings is None:
            embeddings = np.empty((n, dim), np.float32)
        if (lengths != embeddings.shape[1]).any():
            raise ArtifactError(f"{where}: embeddings of unequal length")
        flat = column.flatten().to_numpy(zero_copy_only=False)
        embeddings[len(ids) : len(ids) + len(batch)] = flat.reshape(len(batch), -1)
        ids.extend(batch.column("item_id").to_pylist())
    if embeddings is None or len(ids) != n:
        raise ArtifactError(f"{where}: {len(ids)} rows read where its metadata says {n}")
    return ids, embeddings
