"""Item embeddings files, as pure functions: the Parquet table, its manifest, reading both.

    embeddings.parquet   item_id string, embedding list<float32>[dim]
    manifest.json        version, towers, count, dim, source (and `catalogue`, the file
                         itself or null, with `catalogue_sha256`, its content), unmatched
                         training items

Paths may be local or URIs (`tf.io.gfile`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from components.common.embeddings_table import (
    COLUMNS,
    EMBEDDINGS_SCHEMA,
    read_ids_and_embeddings,
)
from components.common.errors import ArtifactError
from components.common.names import EMBEDDINGS_FILE, MANIFEST_FILE
from components.common.paths import is_remote, join, local_copy, parent, read_bytes, write_bytes
from components.pusher.pushed import PushedTowers

EXAMPLES_SOURCE = "distinct item vectors of the Examples"
HASH_BLOCK = 8 << 20


def content_sha256(path: str) -> str:
    """sha256 of a file's bytes, read in blocks (local or remote): its content, not its path,
    size or modification time."""
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def catalogue_change(manifest: dict[str, Any], catalogue: str | None) -> str | None:
    """Why the catalogue now given differs in content from the one a version was embedded
    from, or None when it is the same (wherever it lies) or the version recorded none."""
    recorded = manifest.get("catalogue_sha256")
    if catalogue is None or recorded is None:
        return None
    now = content_sha256(catalogue)
    if now == recorded:
        return None
    return (
        f"the catalogue {catalogue} (sha256 {now[:12]}) is not the one version "
        f"{manifest['version']} was embedded from (sha256 {recorded[:12]}, "
        f"{manifest['count']} items): version {manifest['version']} keeps its items, the "
        "changed catalogue is embedded under the next version"
    )


def _string_ids(ids) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def embeddings_table(ids, embeddings: np.ndarray) -> pa.Table:
    """`ids [n]` (str or bytes) and `embeddings [n, dim]` as the embeddings table."""
    return pa.Table.from_arrays(
        [
            pa.array(_string_ids(ids), pa.string()),
            pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(embeddings, np.float32).ravel(), pa.float32()),
                embeddings.shape[1],
            ).cast(pa.list_(pa.float32())),
        ],
        schema=EMBEDDINGS_SCHEMA,
    )


def write_embeddings(path: str, batches: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write (item_id, embedding) batches as one Parquet file; return the row count."""
    if not batches:
        raise ArtifactError(f"no item embeddings to write to {path}")
    table = pa.concat_tables([embeddings_table(ids, emb) for ids, emb in batches])
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes(path, buffer.getvalue().to_pybytes())
    return table.num_rows


def join_shards(shards: list[str], path: str) -> int:
    """Parquet files written a bundle each (Beam's `num_shards=0`) as the one file `path`:
    row groups copied one at a time, in the shards' name order, then the shards removed.
    Returns the row count. (A fixed `num_shards=1` makes Beam group every table in memory
    first: 1.1 GB at a million items.) Remote shards are read, and a remote `path` written,
    through a local copy."""
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, EMBEDDINGS_FILE) if is_remote(path) else path
        rows = 0
        with pq.ParquetWriter(local, EMBEDDINGS_SCHEMA) as writer:
            for shard in sorted(shards):
                # Parquet seeks: a remote shard is read from a local copy
                with local_copy(shard) as readable, pq.ParquetFile(readable) as parquet:
                    for group in range(parquet.num_row_groups):
                        table = parquet.read_row_group(group, columns=COLUMNS)
                        writer.write_table(table)
                        rows += table.num_rows
        if local != path:
            tf.io.gfile.copy(local, path, overwrite=True)
    for shard in shards:
        tf.io.gfile.remove(shard)
    for folder in {parent(shard) for shard in shards}:  # an object store has no folder left
        if tf.io.gfile.exists(folder) and not tf.io.gfile.listdir(folder):
            tf.io.gfile.rmtree(folder)
    return rows


def build_manifest(
    towers: PushedTowers, count: int, dim: int, source: str | None, unmatched: int
) -> dict[str, Any]:
    """The manifest of one version's embeddings (`source`: the catalogue, None for the
    Examples' distinct item vectors)."""
    return {
        "version": towers.version,
        "model": towers.item_tower_uri,
        "user_tower": towers.user_tower_uri,
        "count": int(count),
        "dim": int(dim),
        "source": source or EXAMPLES_SOURCE,
        # where the embedded items' pretrained vectors are (the publisher reads them)
        "catalogue": source,
        "unmatched_training_items": int(unmatched) if source else 0,
    }


def write_manifest(folder: str, manifest: dict[str, Any]) -> None:
    if manifest["unmatched_training_items"]:
        logging.warning(
            "%d training item vector(s) are not in the catalogue %s",
            manifest["unmatched_training_items"],
            manifest["source"],
        )
    write_bytes(join(folder, MANIFEST_FILE), json.dumps(manifest, indent=2).encode())


def rewrite_manifest(folder: str, manifest: dict[str, Any]) -> None:
    """Replace the manifest of `folder` (before it is published), without write_manifest's
    warnings again."""
    write_bytes(join(folder, MANIFEST_FILE), json.dumps(manifest, indent=2).encode())


def read_manifest(folder: str) -> dict[str, Any] | None:
    """The manifest of an item embeddings folder, None when it has none (not embedded)."""
    path = join(folder, MANIFEST_FILE)
    return json.loads(read_bytes(path)) if tf.io.gfile.exists(path) else None


def read_item_embeddings(folder: str) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(ids, embeddings [n, d] float32, manifest) of an item embeddings folder."""
    folder = str(folder)
    for file_name in (EMBEDDINGS_FILE, MANIFEST_FILE):
        if not tf.io.gfile.exists(join(folder, file_name)):
            raise ArtifactError(f"{folder} holds no {file_name}: not an item embeddings folder")
    path = join(folder, EMBEDDINGS_FILE)
    with local_copy(path) as local:  # a remote file is read from disk too, not from memory
        ids, embeddings = read_ids_and_embeddings(str(local), path)
    return ids, embeddings, read_manifest(folder)
