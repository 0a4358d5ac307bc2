"""annoy backend: random-projection trees with annoy's dot metric (memory-mapped on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex as _Annoy

from components.common.errors import DataError
from serving.index.base import ItemIndex, register

INDEX_FILE = "index.annoy"


@register
class AnnoyIndex(ItemIndex):
    """annoy with the `dot` metric; `search_k` nodes inspected per query (-1: n_trees · k · 8).

    annoy has no batch add or query, so build and search loop over rows in Python.
    """

    backend = "annoy"
    is_exact = False

    def __init__(self, n_trees: int = 50, search_k: int = -1) -> None:
        super().__init__()
        if n_trees < 1:
            raise DataError("annoy n_trees must be positive")
        self.n_trees, self.search_k = int(n_trees), int(search_k)
        self._index: _Annoy | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees, "search_k": self.search_k}

    def _build(self, vectors: np.ndarray) -> None:
        self._index = _Annoy(vectors.shape[1], "dot")
        for row, vector in enumerate(vectors):
            self._index.add_item(row, vector)
        self._index.build(self.n_trees, n_jobs=-1)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        search_k = self.search_k if self.search_k > 0 else self.n_trees * k * 8
        for i, query in enumerate(queries):
            found, dots = self._index.get_nns_by_vector(
                query, k, search_k=search_k, include_distances=True
            )
            # annoy's distance under `dot` is the inner product itself
            rows[i, : len(found)], scores[i, : len(found)] = found, dots
        return rows, scores

    def _vectors(self) -> np.ndarray:
        return np.array(
            [self._index.get_item_vector(row) for row in range(len(self))], dtype=np.float32
        ).reshape(len(self), self.dim)

    def _save(self, directory: Path) -> None:
        # annoy maps the saved file; the atomic rename keeps that mapping valid
        self._index.save(str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _Annoy(self.dim, "dot")
        self._index.load(str(directory / INDEX_FILE))
