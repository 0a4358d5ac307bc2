"""faiss backends: exact brute force (`flat`), graph (`hnsw`) and inverted lists (`ivf`).

All three rank by the inner product, the model's score. Defaults were picked by
measurement (benchmarks/bench_index.py, 1M x 64-d clustered, unnormalised folded outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from finetower.errors import DataError
from finetower.index.base import ItemIndex, register, rescore

INDEX_FILE = "index.faiss"
# IVF k-means and PQ training see at most this many items: enough for stable centroids,
# and it keeps the build of a 10M catalogue in minutes.
MAX_TRAINING_ROWS = 200_000


def _read(directory: Path) -> faiss.Index:
    return faiss.read_index(str(directory / INDEX_FILE))


@register
class FlatIndex(ItemIndex):
    """Exact inner-product search (faiss IndexFlatIP): the reference every ANN is measured by."""

    backend = "flat"
    is_exact = True

    def __init__(self) -> None:
        super().__init__()
        self._index: faiss.Index | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def _build(self, vectors: np.ndarray) -> None:
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self._index.search(queries, k)
        return rows, scores

    def _save(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _read(directory)


HNSW_METRICS = ("ip", "l2-transform")


@register
class HNSWIndex(ItemIndex):
    """faiss HNSW over item embeddings.

    `metric="l2-transform"` (the default) uses the MIPS-to-L2 reduction: items get an
    extra coordinate `sqrt(max|v|² - |v|²)`, queries get 0, so `|q - v|² = |q|² + max|v|²
    - 2 q·v` ranks like `q·v`, and the graph is built on a proper metric. `metric="ip"`
    builds the graph with the inner product itself. Which wins depends on the data:
    on folded two-tower embeddings (the recipe's item tower over 100k items drawn around
    pretrained item2vec vectors, benchmarks/bench_index.py) `ip` stalled at recall@100
    0.39-0.47 whatever ef_search while the transform reached 0.97 at ef_search 256; on
    synthetic clusters whose norms spread log-normally the transform crowded items near
    one pole and `ip` won (0.96 vs 0.40). Measure on your embeddings
    (`finetower evaluate --index`). Either way the returned scores are the true inner
    products.
    """

    backend = "hnsw"
    is_exact = False

    def __init__(
        self,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        metric: str = "l2-transform",
    ) -> None:
        super().__init__()
        if metric not in HNSW_METRICS:
            raise DataError(f"hnsw metric {metric!r} is not one of {HNSW_METRICS}")
        if min(m, ef_construction, ef_search) < 1:
            raise DataError("hnsw m, ef_construction and ef_search must be positive")
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        self.metric = metric
        self._index: faiss.IndexHNSWFlat | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "metric": self.metric,
        }

    def _build(self, vectors: np.ndarray) -> None:
        if self.metric == "l2-transform":
            squared = np.einsum("nd,nd->n", vectors, vectors)
            extra = np.sqrt(np.maximum(squared.max() - squared, 0.0))
            vectors = np.hstack([vectors, extra[:, None]]).astype(np.float32)
            self._index = faiss.IndexHNSWFlat(vectors.shape[1], self.m, faiss.METRIC_L2)
        else:
            self._index = faiss.IndexHNSWFlat(vectors.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = self.ef_construction
        self._index.add(vectors)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if self.metric == "ip":
            scores, rows = self._index.search(queries, k, params=params)
            return rows, scores
        padded = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
        _, rows = self._index.search(padded, k, params=params)
        valid = rows >= 0
        if not valid.any():
            return rows, np.full(rows.shape, -np.inf, np.float32)
        # re-score the candidates with their untransformed vectors
        unique = np.unique(rows[valid])
        stored = self._index.reconstruct_batch(unique)[:, : self.dim]
        positions = np.where(valid, np.searchsorted(unique, rows), -1)
        ranked, scores = rescore(queries, stored, positions)
        return np.where(ranked >= 0, unique[np.maximum(ranked, 0)], -1), scores

    def _save(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _read(directory)


def default_nlist(count: int) -> int:
    """About 4·sqrt(n) lists, with at least 39 training points per list (faiss' minimum)."""
    return int(max(1, min(round(4 * np.sqrt(count)), count // 39)))


@register
class IVFIndex(ItemIndex):
    """faiss IVF with a 4-bit fast-scan PQ for the list scan, re-ranked exactly (`RFlat`).

    The PQ codes only shortlist `k_factor · k` candidates from `nprobe` lists; the re-ranking
    computes their true inner products with the stored full vectors.
    """

    backend = "ivf"
    is_exact = False

    def __init__(
        self,
        nlist: int | None = None,
        nprobe: int = 64,
        k_factor: int = 4,
        pq_m: int | None = None,
    ) -> None:
        super().__init__()
        if nprobe < 1 or k_factor < 1 or (nlist is not None and nlist < 1):
            raise DataError("ivf nlist, nprobe and k_factor must be positive")
        self.nlist, self.nprobe, self.k_factor, self.pq_m = nlist, int(nprobe), int(k_factor), pq_m
        self._index: faiss.Index | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "k_factor": self.k_factor,
            "pq_m": self.pq_m,
        }

    def _build(self, vectors: np.ndarray) -> None:
        n, dim = vectors.shape
        self.nlist = self.nlist or default_nlist(n)
        # two dimensions per 4-bit sub-quantizer: 16 bytes for 64-d, scanned in registers
        self.pq_m = self.pq_m or (dim // 2 if dim % 2 == 0 else dim)
        if dim % self.pq_m:
            raise DataError(f"ivf pq_m {self.pq_m} does not divide the dimension {dim}")
        spec = f"IVF{self.nlist},PQ{self.pq_m}x4fs,RFlat"
        self._index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors if n <= MAX_TRAINING_ROWS else vectors[rng.choice(n, MAX_TRAINING_ROWS)]
        self._index.train(sample)
        self._index.add(vectors)
        self._configure()

    def _configure(self) -> None:
        faiss.extract_index_ivf(self._index).nprobe = min(self.nprobe, self.nlist)
        self._index.k_factor = float(self.k_factor)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self._index.search(queries, k)
        return rows, scores

    def _save(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _read(directory)
        self._configure()
