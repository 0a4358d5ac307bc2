"""What `publish` takes from an index directory.

An index directory (`serving.index.ItemIndex.save`) can be published when its manifest
records, beside the backend's own entries, what `catalog_manifest` returns:
    model          the model's fingerprint (letters, digits, `._-`): the version's name
    output_bias    the model's output bias, added to `query · item` for a probability
    items          the pretrained item vector file the embeddings were computed from
    items_sha256   that file's checksum, so a changed file is refused
The item embeddings come from the index itself (`ItemIndex.vectors`), the pretrained
vectors from the recorded file, rows in the index's order. `publish_index` does it all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common.errors import ArtifactError
from serving.store.layout import DEFAULT_BATCH
from serving.store.publish import PublishReport, publish

PUBLISH_KEYS = ("model", "output_bias", "items", "items_sha256")


@dataclass
class IndexCatalog:
    """What `publish` needs from an index directory (see `load_index_catalog`)."""

    fingerprint: str
    ids: list[str]
    item_embeddings: np.ndarray  # [n, d] float32, rows in `ids` order
    item_vectors: np.ndarray  # [n, p] float32
    bias: float
    source: dict[str, Any]


def catalog_manifest(fingerprint: str, bias: float, items: str | Path) -> dict[str, Any]:
    """The manifest entries that make an index publishable: pass them to `ItemIndex.save`."""
    from components.common.files import file_sha256

    items = Path(items)
    if not items.exists():
        raise ArtifactError(f"pretrained item vectors {items} not found")
    return {
        "model": str(fingerprint),
        "output_bias": float(bias),
        "items": str(items.resolve()),
        "items_sha256": file_sha256(items),
    }


def load_index_catalog(index_dir: str | Path, items: str | Path | None = None) -> IndexCatalog:
    """Read an index directory: its ids, item embeddings, model fingerprint and bias, and the
    pretrained item vectors (the file the manifest records, checked by checksum, unless
    `items` names another copy of it)."""
    # imported here: readers of the store (the recall service's hot path) need no faiss
    from components.common.files import file_sha256
    from components.common.vectors import read_vectors
    from serving.index import load_index, read_manifest

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    missing = [key for key in PUBLISH_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(
            f"{index_dir} cannot be published: its manifest lacks {missing} "
            "(save the index with serving.store.catalog_manifest(...) as manifest_extra)"
        )
    items_path = Path(items) if items is not None else Path(manifest["items"])
    if not items_path.exists():
        raise ArtifactError(f"pretrained item vectors {items_path} not found: pass items")
    if file_sha256(items_path) != manifest["items_sha256"]:
        raise ArtifactError(f"{items_path} is not the item vector file {index_dir} was built from")
    index = load_index(index_dir)
    vectors = read_vectors(items_path)
    ids = list(index.ids)
    row_of = vectors.index()
    absent = [i for i in ids if i not in row_of]
    if absent:
        raise ArtifactError(f"{len(absent)} index ids are not in {items_path}, e.g. {absent[0]}")
    rows = np.fromiter((row_of[i] for i in ids), np.int64, len(ids))
    in_order = np.array_equal(rows, np.arange(len(vectors)))
    item_vectors = vectors.vectors if in_order else vectors.vectors[rows]
    return IndexCatalog(
        fingerprint=str(manifest["model"]),
        ids=ids,
        item_embeddings=index.vectors(),
        item_vectors=item_vectors,
        bias=float(manifest["output_bias"]),
        source={
            "index": str(index_dir.resolve()),
            "backend": manifest.get("backend"),
            "items": str(items_path.resolve()),
        },
    )


def publish_index(
    redis_url: str,
    index_dir: str | Path,
    *,
    items: str | Path | None = None,
    user_vectors: str | Path | None = None,
    keep: int = 2,
    batch: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> PublishReport:
    """Publish an index directory's items (and, optionally, a user vector file for lookups
    by user id) as a new version, then switch to it atomically (see `publish`)."""
    from components.common.vectors import read_vectors

    catalog = load_index_catalog(index_dir, items)
    users = None
    if user_vectors is not None:
        table = read_vectors(user_vectors)
        users = (table.ids or [str(i) for i in range(len(table))], table.vectors)
    return publish(
        redis_url,
        catalog.fingerprint,
        catalog.ids,
        catalog.item_embeddings,
        catalog.item_vectors,
        catalog.bias,
        users,
        keep=keep,
        batch=batch or DEFAULT_BATCH,
        source=catalog.source,
        progress=progress,
    )
