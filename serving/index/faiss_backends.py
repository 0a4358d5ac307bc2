"""faiss backends: exact brute force (`flat`), graph (`hnsw`) and inverted lists (`ivf`).

All three return the inner product, the model's score. Defaults were picked by measurement
(finetower 0.1's benchmarks/bench_index.py, folded outputs of a trained recipe, 100k and 1M
items).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from components.common.errors import DataError
from serving.index.base import ItemIndex, register

INDEX_FILE = "index.faiss"


ADD_ROWS = 65536  # items transformed and added to an IVF index at a time


def _read(directory: Path) -> faiss.Index:
    return faiss.read_index(str(directory / INDEX_FILE))


def squared_norms(vectors: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", vectors, vectors)


def mips_to_l2(vectors: np.ndarray, width: int, max_squared: float | None = None) -> np.ndarray:
    """Items for an L2 index that ranks like the inner product (the MIPS-to-L2 reduction).

    Each item gets a coordinate `sqrt(max|v|² - |v|²)` (then zeros up to `width`), so all
    items have the same norm and `|q - v|² = |q|² + max|v|² - 2 q·v` for a query padded with
    zeros: the nearest item is the one with the largest inner product. `max_squared`: the
    max |v|² over all items when `vectors` is a part of them.
    """
    n, dim = vectors.shape
    squared = squared_norms(vectors)
    top = squared.max() if max_squared is None else max_squared
    transformed = np.zeros((n, width), np.float32)
    transformed[:, :dim] = vectors
    transformed[:, dim] = np.sqrt(np.maximum(top - squared, 0.0))
    return transformed


def transformed_search(
    index: faiss.Index,
    stored: faiss.IndexFlat,
    queries: np.ndarray,
    k: int,
    params: faiss.SearchParameters,
    shortlist: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search an index built on `mips_to_l2` items; rows and true inner products, best first.

    The index's own distances are transformed L2 (and may be approximate): its `shortlist`
    best rows (default k) are re-scored against the float32 items in `stored` (a query
    padded with zeros has the same inner product with a transformed item as with the
    item), and the best k kept.
    """
    n, dim = queries.shape
    padded = np.zeros((n, index.d), np.float32)
    padded[:, :dim] = queries
    _, rows = index.search(padded, max(k, shortlist or k), params=params)
    scores = np.full(rows.shape, -np.inf, np.float32)  # rows of -1 keep -inf
    faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(scores),
        faiss.swig_ptr(padded),
        stored.get_xb(),
        faiss.swig_ptr(rows),
        index.d,
        n,
        rows.shape[1],
    )
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


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

    def _vectors(self) -> np.ndarray:
        return self._index.reconstruct_n(0, self._index.ntotal)

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
    pretrained item2vec vectors, finetower 0.1's bench_index.py) `ip` stalled at recall@100
    0.39-0.47 whatever ef_search while the transform reached 0.97 at ef_search 256; on
    synthetic clusters whose norms spread log-normally the transform crowded items near
    one pole and `ip` won (0.96 vs 0.40). Measure on your embeddings
    (`components.retrieval_eval.metrics.index_recall`). Either way the returned scores are
    the true inner products.
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
            vectors = mips_to_l2(vectors, width=vectors.shape[1] + 1)
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
        storage = faiss.downcast_index(self._index.storage)
        return transformed_search(self._index, storage, queries, k, params)

    def _vectors(self) -> np.ndarray:
        # the float32 storage holds the items (after the transform: its first `dim` columns)
        stored = faiss.downcast_index(self._index.storage)
        return stored.reconstruct_n(0, stored.ntotal)[:, : self.dim]

    def _save(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _read(directory)


def default_nlist(count: int) -> int:
    """About 2·sqrt(n) lists, with at least 39 training points per list (faiss' minimum)."""
    return int(max(1, min(round(2 * np.sqrt(count)), count // 39)))


@register
class IVFIndex(ItemIndex):
    """faiss IVF over MIPS-to-L2 transformed items, lists stored as float16, re-ranked exactly.

    The transform is the HNSW one (an extra coordinate `sqrt(max|v|² - |v|²)`), padded with
    zeros to a multiple of 8 coordinates so the float16 scan runs in SIMD (at 65 coordinates
    faiss falls back to scalar code, ~5x slower). k-means on the transformed items gives
    lists that follow the model's score, where inner-product k-means does not. The float16
    scan shortlists `k_factor · k` items from `nprobe` lists; a float32 copy (`RFlat`)
    re-ranks them and gives the true inner products. Measured (finetower 0.1's bench_index.py,
    1M folded embeddings, one thread): 2,000 lists / nprobe 32 reached recall@100 0.955 at
    2,242 queries/s and the default nprobe 40 0.967 at 1,747, where HNSW reached 0.907 at
    1,170.
    """

    backend = "ivf"
    is_exact = False

    def __init__(self, nlist: int | None = None, nprobe: int = 40, k_factor: int = 1) -> None:
        super().__init__()
        if nprobe < 1 or k_factor < 1 or (nlist is not None and nlist < 1):
            raise DataError("ivf nlist, nprobe and k_factor must be positive")
        self.nlist, self.nprobe, self.k_factor = nlist, int(nprobe), int(k_factor)
        self._index: faiss.Index | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "k_factor": self.k_factor}

    def _build(self, vectors: np.ndarray) -> None:
        n, dim = vectors.shape
        self.nlist = self.nlist or default_nlist(n)
        width = -(-(dim + 1) // 8) * 8
        transformed = mips_to_l2(vectors, width)
        self._index = faiss.index_factory(
            transformed.shape[1], f"IVF{self.nlist},SQfp16,RFlat", faiss.METRIC_L2
        )
        # faiss subsamples at most 256 points per list for k-means, with a fixed seed
        self._index.train(transformed)
        del transformed  # added a part at a time: not held beside the growing lists
        top = float(squared_norms(vectors).max())
        for start in range(0, n, ADD_ROWS):
            self._index.add(mips_to_l2(vectors[start : start + ADD_ROWS], width, top))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # the float16 lists shortlist, the float32 copy re-scores (one pass, done here)
        return transformed_search(
            self._index.base_index,
            faiss.downcast_index(self._index.refine_index),
            queries,
            k,
            faiss.SearchParametersIVF(nprobe=min(self.nprobe, self.nlist)),
            shortlist=k * self.k_factor,
        )

    def _vectors(self) -> np.ndarray:
        # the float32 re-ranking copy holds the transformed items: their first `dim` columns
        stored = faiss.downcast_index(self._index.refine_index)
        return stored.reconstruct_n(0, stored.ntotal)[:, : self.dim]

    def _save(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    def _load(self, directory: Path) -> None:
        self._index = _read(directory)
