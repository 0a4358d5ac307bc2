"""Reading the item embeddings table a batch at a time, and what it refuses."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common import embeddings_table
from components.common.embeddings_table import EMBEDDINGS_SCHEMA, read_ids_and_embeddings
from components.common.errors import ArtifactError


def write(path, ids, rows) -> str:
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(rows, pa.list_(pa.float32()))],
        schema=EMBEDDINGS_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=4)
    return str(path)


def test_batches_fill_one_array_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings_table, "READ_ROWS", 3)  # several batches and row groups
    vectors = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    path = write(tmp_path / "e.parquet", [f"i{k}" for k in range(10)], vectors.tolist())
    ids, got = read_ids_and_embeddings(path, path)
    assert ids == [f"i{k}" for k in range(10)]
    np.testing.assert_array_equal(got, vectors)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    with open(path, "rb") as f:  # a file object reads the same
        assert read_ids_and_embeddings(f, path)[0] == ids


def test_unequal_lengths_and_no_rows_are_refused_by_name(tmp_path):
    # 3 + 5 values over two rows: a total divisible by the row count, lengths unequal
    path = write(tmp_path / "bad.parquet", ["a", "b"], [[1, 2, 3], [4, 5, 6, 7, 8]])
    with pytest.raises(ArtifactError, match="bad.parquet: embeddings of unequal length"):
        read_ids_and_embeddings(path, path)
    path = write(tmp_path / "none.parquet", [], [])
    with pytest.raises(ArtifactError, match="none.parquet holds no items"):
        read_ids_and_embeddings(path, path)
