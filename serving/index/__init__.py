"""Item indexes behind one interface: `build`, `search(queries, k) -> (ids, scores)`, `save`,
`load`, `vectors`, `is_exact`. Backends by name: `flat` (exact), `hnsw`, `ivf`, `annoy`."""

from serving.index import annoy_backend, faiss_backends  # noqa: F401  (register backends)
from serving.index.base import (
    BACKENDS,
    ItemIndex,
    load_index,
    make_index,
    read_manifest,
)

__all__ = ["BACKENDS", "ItemIndex", "load_index", "make_index", "read_manifest"]
