"""Top-N recall for one user, as it would run online.

history (item ids, oldest -> newest) -> pretrained user vector (mean of the last items'
pretrained vectors) -> folded query `w ⊙ user_tower(u)` -> index search -> the model's
probability `sigmoid(query · item + b)`.

An index directory made by `build_item_index` holds a copy of the run (so it cannot drift
from the model its embeddings came from) and records the pretrained item vectors' path and
checksum, so `Recaller(index_dir)` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetower.artifacts import file_sha256
from finetower.errors import ArtifactError, DataError
from finetower.export import folded_queries, item_embeddings
from finetower.index import ItemIndex, load_index, make_index, read_manifest
from finetower.model import TwoTowerModel
from finetower.runs import CONFIG_FILE, MODEL_FILE, load_run, run_fingerprint
from finetower.user_vectors import DEFAULT_LAST_N, user_vector
from finetower.vectors import Vectors, read_vectors

RUN_COPY = "run"


def build_item_index(
    run_dir: str | Path,
    items: str | Path,
    out_dir: str | Path,
    *,
    backend: str = "flat",
    params: dict[str, Any] | None = None,
    batch_rows: int = 65_536,
) -> dict[str, Any]:
    """Embed the item vectors in `items` with the run's item tower, index them, save to `out_dir`.

    Returns the manifest written. The item ids are the vector file's ids (row numbers for
    a `.npy` file).
    """
    run_dir, items = Path(run_dir), Path(items)
    model = load_run(run_dir)
    item_vectors = read_vectors(items)
    embeddings = item_embeddings(model, item_vectors.vectors, batch_rows=batch_rows, source=items)
    index = make_index(backend, **(params or {}))
    index.build(embeddings, item_vectors.ids)
    extra = {
        "model": run_fingerprint(run_dir),
        "run": str(run_dir.resolve()),
        "items": str(items.resolve()),
        "items_sha256": file_sha256(items),
        "output_bias": model.output_bias,
    }
    out_dir = Path(out_dir)
    # the run's two small files travel with the index, so the index is the model's, whole
    attach = {f"{RUN_COPY}/{name}": run_dir / name for name in (CONFIG_FILE, MODEL_FILE)}
    index.save(out_dir, extra, attach)
    return read_manifest(out_dir)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def top_items(
    model: TwoTowerModel,
    index: ItemIndex,
    vector: np.ndarray,
    k: int,
    exclude: set[str] | frozenset = frozenset(),
) -> list[dict[str, Any]]:
    """The k best items `[{"id", "score"}]` for a pretrained user vector `[user_dim]`:
    folded query -> index -> the model's probability; ids in `exclude` dropped."""
    vector = np.array(vector, np.float32).reshape(1, -1)  # a copy: inputs may be read-only
    ids, scores = index.search(folded_queries(model, vector), k + len(exclude))
    probabilities = _sigmoid(scores[0].astype(np.float64) + model.output_bias)
    items = [
        {"id": item, "score": float(p)}
        for item, p in zip(ids[0], probabilities, strict=True)
        if item is not None and item not in exclude
    ]
    return items[:k]


class Recaller:
    """Answers top-k requests from an index directory (Python API of `finetower recall`).

    `run_dir` and `items` default to what the index recorded; a run whose fingerprint is
    not the index's is refused, and so are item vectors whose checksum changed.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        run_dir: str | Path | None = None,
        items: str | Path | Vectors | None = None,
        user_vectors: str | Path | Vectors | None = None,
        last_n: int | None = DEFAULT_LAST_N,
        half_life: float | None = None,
    ) -> None:
        index_dir = Path(index_dir)
        self.manifest = read_manifest(index_dir)
        self.fingerprint: str = self.manifest.get("model", "")
        run_dir = Path(run_dir) if run_dir is not None else index_dir / RUN_COPY
        if run_fingerprint(run_dir) != self.fingerprint:
            raise ArtifactError(
                f"{run_dir} holds model {run_fingerprint(run_dir)} but {index_dir} was built "
                f"from model {self.fingerprint}: rebuild the index with `finetower index`"
            )
        self.model = load_run(run_dir)
        self.index: ItemIndex = load_index(index_dir)
        self.item_vectors = self._item_vectors(items)
        self.item_rows = self.item_vectors.index()
        self.user_vectors = self._read(user_vectors) if user_vectors is not None else None
        self.user_rows = self.user_vectors.index() if self.user_vectors is not None else None
        self.last_n, self.half_life = last_n, half_life

    @staticmethod
    def _read(source: str | Path | Vectors) -> Vectors:
        return source if isinstance(source, Vectors) else read_vectors(source)

    def _item_vectors(self, items: str | Path | Vectors | None) -> Vectors:
        if isinstance(items, Vectors):
            return items
        path = Path(items) if items is not None else Path(self.manifest["items"])
        if not path.exists():
            raise ArtifactError(f"pretrained item vectors {path} not found: pass them explicitly")
        if file_sha256(path) != self.manifest.get("items_sha256"):
            raise ArtifactError(
                f"{path} is not the item vector file the index was built from (checksum differs)"
            )
        return read_vectors(path)

    def for_history(
        self, history: Sequence[str], k: int = 10, *, exclude_seen: bool = False
    ) -> dict[str, Any]:
        """Top k for a history of item ids ordered oldest -> newest."""
        history = [str(item) for item in history]
        vector, unknown = user_vector(
            self.item_vectors,
            history,
            last_n=self.last_n,
            half_life=self.half_life,
            index=self.item_rows,
        )
        if vector is None:
            raise DataError(f"none of the {len(history)} history items has a pretrained vector")
        seen = set(history) if exclude_seen else set()
        result = self.for_user_vector(vector, k, exclude=seen)
        result.update(history=len(history), unknown_history=len(unknown))
        return result

    def for_user(self, user_id: str, k: int = 10) -> dict[str, Any]:
        """Top k for a user id looked up in the user vectors file."""
        if self.user_vectors is None:
            raise DataError("no user vectors given: pass user_vectors (--user-vectors FILE)")
        row = self.user_rows.get(str(user_id))
        if row is None:
            raise DataError(f"user {user_id!r} has no vector in the user vectors file")
        return self.for_user_vector(self.user_vectors.vectors[row], k)

    def for_user_vector(
        self, vector: np.ndarray, k: int = 10, *, exclude: set[str] | frozenset = frozenset()
    ) -> dict[str, Any]:
        """Top k for a pretrained user vector `[user_dim]`, dropping ids in `exclude`."""
        items = top_items(self.model, self.index, vector, k, exclude)
        return {"items": items, "model": self.fingerprint}
