"""The one interface every item index implements, and its directory on disk.

An index directory holds the backend's files, `ids.json` (the item ids, row order) and
`manifest.json` (backend, parameters, count, dim, plus what the caller records: the model
fingerprint, where the run and the item vectors are). It is written atomically.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from components.common.errors import ArtifactError, DataError
from components.common.files import atomic_dir, read_json, write_json

MANIFEST_FILE = "manifest.json"
IDS_FILE = "ids.json"
INDEX_FORMAT = "serving.index/1"


class ItemIndex(ABC):
    """Top-k inner-product search over item embeddings.

    `search(queries [n, dim], k) -> (ids [n, k] object, scores [n, k] float32)`; scores are the
    true inner products `query · item`, best first. `is_exact` says whether the top k is
    guaranteed (brute force) or approximate.
    """

    backend: ClassVar[str]
    is_exact: ClassVar[bool]

    def __init__(self) -> None:
        self.ids = []
        self.dim = 0

    @property
    def ids(self) -> list[str]:
        """The item id of each row."""
        return self._ids

    @ids.setter
    def ids(self, ids: list[str]) -> None:
        self._ids = list(ids)
        # built once: search maps rows to ids without copying the id list per query
        self._id_of_row = np.asarray([*self._ids, None], dtype=object)  # row -1 -> None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameters that made this index (recorded in the manifest)."""

    def build(self, vectors: np.ndarray, ids: list[str] | None = None) -> ItemIndex:
        """Index `vectors [n, dim]` (float32); `ids` name the rows (default: row numbers)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise DataError(f"cannot index an array of shape {vectors.shape}: need [n >= 1, dim]")
        if not np.isfinite(vectors).all():
            raise DataError("item embeddings hold NaN or infinity")
        ids = [str(i) for i in range(len(vectors))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(vectors):
            raise DataError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids, self.dim = ids, vectors.shape[1]
        self._build(vectors)
        return self

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k rows `[n, k]` int64 (-1 where fewer than k found) and true scores `[n, k]`."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise DataError(f"queries are {queries.shape[1]}-d but the index is {self.dim}-d")
        k = max(1, min(int(k), len(self)))
        rows, scores = self._search(queries, k)
        return rows.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)

    def vectors(self) -> np.ndarray:
        """The indexed item embeddings `[n, dim]` float32, in row order, as `build` got them."""
        if len(self) == 0:
            raise ArtifactError("the index is empty: build or load it first")
        return np.ascontiguousarray(self._vectors(), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k item ids `[n, k]` (None where fewer found) and their inner products `[n, k]`."""
        rows, scores = self.search_rows(queries, k)
        return self._id_of_row[rows], scores

    def save(
        self,
        directory: str | Path,
        manifest_extra: dict[str, Any] | None = None,
        attach: dict[str, Path] | None = None,
    ) -> Path:
        """Write the index, its ids and `manifest.json` into `directory`, atomically.

        `attach` maps names inside the directory to files copied along (e.g. the run).
        """
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self._save(tmp)
            for name, source in (attach or {}).items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, tmp / name)
            (tmp / IDS_FILE).write_text(json.dumps(self.ids))
            manifest = {
                "format": INDEX_FORMAT,
                "backend": self.backend,
                "params": self.params,
                "is_exact": self.is_exact,
                "count": len(self),
                "dim": self.dim,
            }
            manifest.update(manifest_extra or {})
            write_json(tmp / MANIFEST_FILE, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ItemIndex:
        """Load the index saved in `directory` (any backend; the manifest says which)."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        backend = BACKENDS.get(manifest["backend"])
        if backend is None:
            raise ArtifactError(f"{directory}: unknown index backend {manifest['backend']!r}")
        if cls is not ItemIndex and backend is not cls:
            found = manifest["backend"]
            raise ArtifactError(f"{directory} holds a {found} index, not {cls.backend}")
        try:
            index = backend(**manifest["params"])
        except TypeError:
            raise ArtifactError(
                f"{directory}: {manifest['backend']} parameters {manifest['params']} are not "
                "this version's; rebuild the index"
            ) from None
        index.ids = json.loads((directory / IDS_FILE).read_text())
        index.dim = int(manifest["dim"])
        if len(index.ids) != manifest["count"]:
            raise ArtifactError(f"{directory}: {IDS_FILE} does not hold {manifest['count']} ids")
        index._load(directory)
        return index

    @abstractmethod
    def _build(self, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _vectors(self) -> np.ndarray: ...

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @abstractmethod
    def _load(self, directory: Path) -> None: ...


BACKENDS: dict[str, type[ItemIndex]] = {}


def register(cls: type[ItemIndex]) -> type[ItemIndex]:
    BACKENDS[cls.backend] = cls
    return cls


def make_index(backend: str, **params: Any) -> ItemIndex:
    """A new, empty index of the named backend (`flat`, `hnsw`, `ivf`, `annoy`)."""
    if backend not in BACKENDS:
        raise DataError(f"unknown index backend {backend!r}; choose one of {sorted(BACKENDS)}")
    try:
        return BACKENDS[backend](**params)
    except TypeError as error:
        raise DataError(f"bad parameters for the {backend} index: {error}") from None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.exists():
        raise ArtifactError(f"{directory} is not a finetower index: {MANIFEST_FILE} is missing")
    manifest = read_json(path)
    if manifest.get("format") != INDEX_FORMAT:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}, expected {INDEX_FORMAT}")
    return manifest


def load_index(directory: str | Path) -> ItemIndex:
    """Load an index directory written by `ItemIndex.save`."""
    return ItemIndex.load(directory)
