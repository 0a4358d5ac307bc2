"""Item indexes behind one interface: `build`, `search(queries, k) -> (ids, scores)`, `save`,
`load`, `is_exact`. Backends by name: `flat` (exact), `hnsw`, `ivf`, `annoy`."""

from finetower.index import annoy_backend, faiss_backends  # noqa: F401  (register backends)
from finetower.index.base import (
    BACKENDS,
    ItemIndex,
    load_index,
    make_index,
    read_manifest,
)

__all__ = ["BACKENDS", "ItemIndex", "load_index", "make_index", "read_manifest"]
