"""One pushed version as the recall service holds it: the ANN index, the exact item
embeddings it re-ranks with, the pretrained item vectors (for histories) and the bias.

A snapshot never changes once loaded; the service swaps whole snapshots, so a request that
took one answers from one version to its end — with that version's user-vector recipe (how
its histories are averaged), which travels in the snapshot.

On disk: see `artifacts` (what the EmbeddingsPublisher and ItemEmbeddings wrote).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common.errors import ArtifactError
from components.common.user_vectors import UserVectorRecipe
from serving.index import ItemIndex, load_index, read_manifest
from serving.recall.artifacts import (
    ann_dir_for,
    complete_versions,
    item_embeddings_dir_for,
    read_item_embeddings,
)

__all__ = ["Snapshot", "ShortListError", "complete_versions", "load_snapshot", "top_items"]


class ShortListError(RuntimeError):
    """The index gave fewer rows than asked although the catalogue holds enough."""


@dataclass(frozen=True)
class Snapshot:
    """A pushed version's items, whole: index, embeddings `[n, 64]`, pretrained vectors."""

    version: int
    store_version: str | None  # the Redis version pinned for history lookups; None: local
    index: ItemIndex
    ids: np.ndarray  # [n] object: item id of each row
    embeddings: np.ndarray  # [n, d] float32, rows as the index's
    item_vectors: np.ndarray | None  # [n, p] float32 (memory-mapped); None: none recorded
    row_of: dict[str, int]
    bias: float  # the output layer's bias recorded at publish time
    user_dim: int
    manifest: dict[str, Any]
    # how the version's model was trained to see histories (None: published before recipes
    # were recorded; the service then uses its --history_last_n)
    recipe: UserVectorRecipe | None = None

    @property
    def backend(self) -> str:
        return self.index.backend


def load_snapshot(
    output_dir: str | Path, version: int, store_version: str | None = None
) -> Snapshot:
    """Read version `version` from `output_dir`; refuse an index of other items."""
    ann_dir = ann_dir_for(output_dir, version)
    manifest = read_manifest(ann_dir)
    if manifest.get("version") != version:
        raise ArtifactError(f"{ann_dir} holds version {manifest.get('version')}, not {version}")
    index = load_index(ann_dir)
    ids, embeddings, _ = read_item_embeddings(item_embeddings_dir_for(output_dir, version))
    if ids != index.ids:
        raise ArtifactError(
            f"{ann_dir} indexes other items than item_embeddings/{version}: rebuild the index"
        )
    item_vectors = None
    if manifest.get("item_vectors"):
        item_vectors = np.load(ann_dir / manifest["item_vectors"], mmap_mode="r")
        if item_vectors.shape[0] != len(ids):
            raise ArtifactError(f"{ann_dir}: {len(item_vectors)} pretrained vectors for {len(ids)}")
    user_dim = int(manifest.get("user_dim") or 0)
    recipe = None
    if manifest.get("user_vector_recipe"):
        try:
            recipe = UserVectorRecipe.from_dict(manifest["user_vector_recipe"])
        except ValueError as error:
            raise ArtifactError(f"{ann_dir}/manifest.json: {error}") from None
        if item_vectors is not None and recipe.dim and item_vectors.shape[1] != recipe.dim:
            raise ArtifactError(
                f"{ann_dir}: pretrained vectors are {item_vectors.shape[1]}-d, the version's "
                f"user vector recipe says {recipe.dim}"
            )
    return Snapshot(
        version=version,
        store_version=store_version,
        index=index,
        ids=np.asarray(ids, dtype=object),
        embeddings=embeddings,
        item_vectors=item_vectors,
        row_of={item: row for row, item in enumerate(ids)},
        bias=float(manifest["output_bias"]),
        user_dim=user_dim,
        manifest=manifest,
        recipe=recipe,
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def top_items(
    snapshot: Snapshot, query: np.ndarray, bias: float, n: int, exclude: frozenset[str]
) -> list[dict[str, Any]]:
    """The n best items for one folded query `[d]`: the ANN shortlist re-ranked exactly by
    `query · embedding`, ids in `exclude` dropped; score = logit, probability = sigmoid.

    Never a short list: when the catalogue holds min(n, items not excluded) rows and the
    index gives fewer, ShortListError.
    """
    query = np.ascontiguousarray(query, np.float32).reshape(1, -1)
    rows, _ = snapshot.index.search_rows(query, n + len(exclude))
    rows = rows[0][rows[0] >= 0]
    exact = snapshot.embeddings[rows] @ query[0]
    order = np.argsort(-exact, kind="stable")
    rows, exact = rows[order], exact[order]
    if exclude:
        keep = np.fromiter((snapshot.ids[r] not in exclude for r in rows), bool, len(rows))
        rows, exact = rows[keep], exact[keep]
    wanted = min(n, len(snapshot.ids) - len(exclude))
    if len(rows) < wanted:
        raise ShortListError(
            f"the {snapshot.backend} index of version {snapshot.version} gave {len(rows)} of "
            f"the {wanted} items asked for"
        )
    rows, logits = rows[:n], exact[:n].astype(np.float64) + bias
    probabilities = sigmoid(logits)
    return [
        {"item_id": snapshot.ids[r], "score": float(s), "probability": float(p)}
        for r, s, p in zip(rows.tolist(), logits, probabilities, strict=True)
    ]
