"""What `publish` takes from an index directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetower.errors import ArtifactError


@dataclass
class IndexCatalog:
    """What `publish` needs from an index directory (see `load_index_catalog`)."""

    fingerprint: str
    ids: list[str]
    item_embeddings: np.ndarray  # [n, d] float32, rows in `ids` order
    item_vectors: np.ndarray  # [n, p] float32
    bias: float
    source: dict[str, Any]


def load_index_catalog(index_dir: str | Path, items: str | Path | None = None) -> IndexCatalog:
    """Read an index directory from `finetower index`: its ids, model and item vectors.

    The item embeddings are recomputed with the run copy the index holds (the index does not
    keep them in a backend-neutral form); the item vectors are the file the index recorded,
    checked by checksum, unless `items` names another copy of it.
    """
    # imported here: readers of the store (the recall service's hot path) need no torch/faiss
    from finetower.artifacts import file_sha256, read_json
    from finetower.export import item_embeddings
    from finetower.index import read_manifest
    from finetower.index.base import IDS_FILE
    from finetower.recall import RUN_COPY
    from finetower.runs import load_run, run_fingerprint
    from finetower.vectors import read_vectors

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    fingerprint, run_dir = manifest.get("model", ""), index_dir / RUN_COPY
    if run_fingerprint(run_dir) != fingerprint:
        raise ArtifactError(f"{run_dir} does not hold model {fingerprint} that {index_dir} names")
    items_path = Path(items) if items is not None else Path(manifest["items"])
    if not items_path.exists():
        raise ArtifactError(f"pretrained item vectors {items_path} not found: pass --items")
    if file_sha256(items_path) != manifest.get("items_sha256"):
        raise ArtifactError(f"{items_path} is not the item vector file {index_dir} was built from")
    vectors = read_vectors(items_path)
    ids = [str(i) for i in read_json(index_dir / IDS_FILE)]
    row_of = vectors.index()
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise ArtifactError(f"{len(missing)} index ids are not in {items_path}, e.g. {missing[0]}")
    rows = np.fromiter((row_of[i] for i in ids), np.int64, len(ids))
    in_order = np.array_equal(rows, np.arange(len(vectors)))
    item_vectors = vectors.vectors if in_order else vectors.vectors[rows]
    model = load_run(run_dir)
    return IndexCatalog(
        fingerprint=fingerprint,
        ids=ids,
        item_embeddings=item_embeddings(model, item_vectors, source=items_path),
        item_vectors=item_vectors,
        bias=float(model.output_bias),
        source={
            "index": str(index_dir.resolve()),
            "backend": manifest.get("backend"),
            "items": str(items_path.resolve()),
        },
    )
