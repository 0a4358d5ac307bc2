"""What the EmbeddingsPublisher does, as named steps: `publish_version` reads a version's item
embeddings, keeps an index already built (idempotency) or finds the items' pretrained vectors,
samples recall queries and builds the ANN index (`ann`), then publishes the version to Redis
once. In Redis a pushed version `v` is the store fingerprint `v<v>` (store versions
`v<v>-<token>`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.common.errors import ArtifactError, DataError
from components.common.names import ANN_DIR, EMBEDDINGS_FILE, MANIFEST_FILE
from components.common.paths import copy_tree, is_remote
from components.common.publish import publish_tree
from components.common.user_vectors import UserVectorRecipe, vectors_sha256
from components.embeddings_publisher.ann import (
    ITEM_VECTORS_FILE,
    RECALL_QUERIES,
    PretrainedSource,
    UserTower,
    ann_recall,
    ann_uri,
    build_ann_index,
    pretrained_item_vectors,
    read_index_item_vectors,
    read_index_manifest,
    sample_queries,
)
from components.item_embeddings.embeddings import read_item_embeddings
from components.pusher.pushed import PushedTowers
from serving.store.naming import pushed_version_of, store_fingerprint  # one naming, the store's

# names the recall service and the tests import from here
__all__ = [
    "ANN_DIR",
    "EMBEDDINGS_FILE",
    "MANIFEST_FILE",
    "RECALL_QUERIES",
    "PublishResult",
    "UserTower",
    "ann_dir_for",
    "ann_recall",
    "build_ann_index",
    "recipe_of_version",
    "publish_version",
    "pushed_version_of",
    "read_item_embeddings",
    "sample_queries",
    "store_fingerprint",
]

KEEP_STORE_VERSIONS = 2
# the manifest key of the user-vector recipe (the recall service reads it from the index's)
RECIPE_KEY = "user_vector_recipe"


def ann_dir_for(output_dir: str | Path, version: int) -> Path:
    """`<output_dir>/ann_index/<version>` as a local folder (the recall service reads one)."""
    if is_remote(output_dir):
        raise ArtifactError(f"the recall service reads a local output_dir, not {output_dir}")
    return Path(ann_uri(str(output_dir), version))


@dataclass
class StoreOutcome:
    """What publishing one pushed version to Redis did."""

    published: bool
    store_version: str | None
    current: str | None
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


def publish_once(
    redis_url: str,
    version: int,
    ids: list[str],
    embeddings: np.ndarray,
    item_vectors: np.ndarray,
    bias: float,
    source: dict[str, Any],
    keep: int = KEEP_STORE_VERSIONS,
) -> StoreOutcome:
    """Publish a pushed version and switch to it, unless the store has (or had) it.

    Never twice: a kept store version of the same push is left as it is, current or not (an
    operator's rollback stands); nor over a newer push that is current.
    """
    from serving.store import StoreReader, publish

    fingerprint = store_fingerprint(version)
    with StoreReader(redis_url) as reader:
        kept, current = reader.versions(), reader.current_version()
    same = [v for v in kept if v.rsplit("-", 1)[0] == fingerprint]
    if same:
        state = "current" if current == same[0] else f"not current ({current} is)"
        reason = f"pushed version {version} is already in the store as {same[0]}, {state}"
        return StoreOutcome(False, same[0], current, reason)
    serving = pushed_version_of(current)
    if serving is not None and serving > version:
        reason = f"the store serves a newer push ({current}): version {version} not published"
        return StoreOutcome(False, None, current, reason)
    if item_vectors is None:
        raise ArtifactError(
            "Redis needs the pretrained item vectors (for histories): give the publisher the "
            "Examples or an item catalogue"
        )
    report = publish(
        redis_url, fingerprint, ids, embeddings, item_vectors, bias, keep=keep, source=source
    )
    if not report.committed:  # a newer push or a rollback's pin holds `current`: ended cleanly
        reason = f"version {version} not made current: {report.reason}"
        return StoreOutcome(False, None, current, reason, report.to_dict())
    reason = f"published {report.items} items as {report.version} (was {report.previous})"
    logging.info("%s in %.1f s", reason, report.seconds)
    return StoreOutcome(True, report.version, report.version, reason, report.to_dict())


def check_backend(backend: str) -> str:
    from serving.index import BACKENDS

    if backend not in BACKENDS:
        raise DataError(f"ann_backend {backend!r} is not one of {sorted(BACKENDS)}")
    return backend


@dataclass(frozen=True)
class PublishResult:
    """What publishing one version did: its index folder and manifest, the Redis outcome."""

    version: int
    count: int
    ann_dir: str
    ann: dict[str, Any]
    store: StoreOutcome | None = None

    def manifest(self) -> dict[str, Any]:
        """The publisher artifact's manifest.json."""
        manifest = {
            "version": self.version,
            "count": self.count,
            "ann_dir": self.ann_dir,
            "ann_backend": self.ann["backend"],
            "ann_params": self.ann["params"],
            "ann_recall_at_100": self.ann["ann_recall"],
            "recall_queries": self.ann["recall_queries"],
            "bias": self.ann["output_bias"],
            RECIPE_KEY: self.ann.get(RECIPE_KEY),
        }
        if self.store is not None:
            manifest["redis"] = {
                "published": self.store.published,
                "store_version": self.store.store_version,
                "current": self.store.current,
                "reason": self.store.reason,
                **({"report": self.store.report} if self.store.report else {}),
            }
        return manifest


def existing_index(final: str, version: int, count: int) -> dict[str, Any] | None:
    """The manifest of the version's index if it was built before (checked), else None."""
    ann = read_index_manifest(final)
    if ann is not None and (ann.get("version") != version or ann.get("count") != count):
        raise ArtifactError(f"{final} holds another index than version {version}'s")
    return ann


def index_version(
    index_dir: str,
    ids: list[str],
    embeddings: np.ndarray,
    embeddings_dir: str,
    towers: PushedTowers,
    pretrained: PretrainedSource,
    *,
    backend: str,
    params: dict[str, Any],
    seed: int,
    recipe: UserVectorRecipe,
) -> dict[str, Any]:
    """Build the version's index at `index_dir` and return its manifest; the items' pretrained
    vectors are saved beside it (written out before the index is built, so the two are not
    in memory together). The manifest records `recipe` completed with the vectors' size and
    content digest."""
    tower = UserTower(towers.user_tower_uri)
    item_vectors, vectors_source = pretrained_item_vectors(ids, pretrained)
    recipe = recipe_of_version(recipe, ids, item_vectors, tower.user_dim)
    queries, how = sample_queries(tower, item_vectors, RECALL_QUERIES, seed)
    with tempfile.TemporaryDirectory() as scratch:
        vectors_file = None
        if item_vectors is not None:  # to disk before the index is built: not held beside it
            vectors_file = os.path.join(scratch, ITEM_VECTORS_FILE)
            np.save(vectors_file, np.ascontiguousarray(item_vectors, np.float32))
            del item_vectors  # 0.5 GB at a million 128-d items
        ann = build_ann_index(
            index_dir,
            ids,
            embeddings,
            backend,
            queries,
            vectors_file,
            params=params,
            extra={
                "version": towers.version,
                "output_bias": tower.bias,
                "user_dim": tower.user_dim,
                "user_tower": tower.path,
                "item_tower": towers.item_tower_uri,
                "item_embeddings": embeddings_dir,
                "pretrained_items": vectors_source,
                "recall_query_source": how,
                "recall_seed": seed,
                RECIPE_KEY: recipe.to_dict(),
            },
        )
    logging.info(
        "version %d: %s index of %d items, recall@%d %.4f",
        towers.version,
        backend,
        len(ids),
        ann["recall_k"],
        ann["ann_recall"],
    )
    return ann


def recipe_of_version(
    recipe: UserVectorRecipe, ids: list[str], item_vectors: np.ndarray | None, user_dim: int
) -> UserVectorRecipe:
    """`recipe` (how training averaged histories) with what this version serves them from:
    the pretrained vectors' content digest and size (the user tower's input size without
    vectors). Vectors of another size than the user tower's input cannot make its users."""
    if item_vectors is None:
        return UserVectorRecipe(recipe.last_n, recipe.half_life, user_dim, None)
    if item_vectors.shape[1] != user_dim:
        logging.warning(
            "pretrained item vectors are %d-d, the user tower takes %d: histories cannot be "
            "served for this version",
            item_vectors.shape[1],
            user_dim,
        )
    return UserVectorRecipe(
        recipe.last_n,
        recipe.half_life,
        int(item_vectors.shape[1]),
        vectors_sha256(ids, item_vectors),
    )


def publish_version(
    embeddings_dir: str,
    towers: PushedTowers,
    output_dir: str,
    pretrained: PretrainedSource,
    *,
    index_dir: str,
    backend: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    redis_url: str | None = None,
    recipe: UserVectorRecipe | None = None,
) -> PublishResult:
    """Index a pushed version's item embeddings into `index_dir` (the publisher's artifact)
    and publish a copy at `<output_dir>/ann_index/<version>`, the folder users and the recall
    service read (an index published before is kept and copied back into `index_dir`); with
    `redis_url`, publish the version to Redis once. `recipe`: how training made user vectors
    (default: the recipe's mean of the last 5), recorded in the index's manifest."""
    ids, embeddings, _ = read_item_embeddings(embeddings_dir)
    final = ann_uri(output_dir, towers.version)
    ann = existing_index(final, towers.version, len(ids))
    if ann is not None:
        logging.info("version %d already indexed at %s", towers.version, final)
        copy_tree(final, index_dir)
    else:
        ann = index_version(
            index_dir,
            ids,
            embeddings,
            embeddings_dir,
            towers,
            pretrained,
            backend=backend,
            params=params or {},
            seed=seed,
            recipe=recipe or UserVectorRecipe(),
        )
        publish_tree(index_dir, final, last=MANIFEST_FILE)
    store = None
    if redis_url:
        item_vectors = read_index_item_vectors(final, ann)  # as published, mapped when local
        store = publish_once(
            redis_url,
            towers.version,
            ids,
            embeddings,
            item_vectors,
            float(ann["output_bias"]),
            source={
                "pushed_version": towers.version,
                "ann_index": final,
                "item_embeddings": embeddings_dir,
                "user_tower": towers.user_tower_uri,
                RECIPE_KEY: ann.get(RECIPE_KEY),
            },
        )
        logging.info("Redis: %s", store.reason)
    return PublishResult(towers.version, len(ids), final, ann, store)
