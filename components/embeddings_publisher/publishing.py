"""What the EmbeddingsPublisher does, as plain functions: read a version's item embeddings, find
their pretrained vectors, build and measure the ANN index, publish the version to Redis once.

    <output_dir>/ann_index/<version>/   index files, ids.json, item_vectors.npy (pretrained, in
                                        index row order), manifest.json (backend, version,
                                        bias, recall@100 against exact search)

The folder is built under a temporary name and renamed into place: complete or absent. In
Redis a pushed version `v` is the store fingerprint `v<v>` (store versions `v<v>-<token>`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import ArtifactError, DataError
from components.common.files import read_json

ANN_DIR = "ann_index"
ITEM_VECTORS_FILE = "item_vectors.npy"
EMBEDDINGS_FILE = "embeddings.parquet"
MANIFEST_FILE = "manifest.json"
PUBLISH_FORMAT = "finetower.ann_index/1"
RECALL_K = 100
RECALL_QUERIES = 200
RECALL_HISTORY = 5  # sample queries: the user tower over the mean of this many random items
KEEP_STORE_VERSIONS = 2
_STORE_VERSION = re.compile(r"^v(\d+)-[0-9a-f]+$")


def store_fingerprint(version: int) -> str:
    """The store fingerprint of a pushed version: its store versions are `v<version>-<token>`."""
    return f"v{int(version)}"


def pushed_version_of(store_version: str | None) -> int | None:
    """The pushed version a store version holds, or None if it is not one of ours."""
    match = _STORE_VERSION.match(store_version or "")
    return int(match.group(1)) if match else None


def ann_dir_for(output_dir: str | Path, version: int) -> Path:
    """`<output_dir>/ann_index/<version>`; a local folder (faiss and annoy write local files)."""
    if "://" in str(output_dir):
        raise ArtifactError(f"the ANN index needs a local output_dir, not {output_dir}")
    return Path(output_dir) / ANN_DIR / str(int(version))


def read_item_embeddings(folder: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(ids, embeddings [n, d] float32, manifest) of an item embeddings folder."""
    folder = Path(folder)
    for name in (EMBEDDINGS_FILE, MANIFEST_FILE):
        if not (folder / name).exists():
            raise ArtifactError(f"{folder} holds no {name}: not an item embeddings folder")
    table = pq.read_table(folder / EMBEDDINGS_FILE, columns=["item_id", "embedding"])
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    n = table.num_rows
    if n == 0:
        raise ArtifactError(f"{folder / EMBEDDINGS_FILE} holds no items")
    embeddings = np.ascontiguousarray(flat.reshape(n, -1))
    return table.column("item_id").to_pylist(), embeddings, read_json(folder / MANIFEST_FILE)


def user_tower_path_for(item_tower_path: str, version: int) -> str:
    """The pushed user tower beside a pushed item tower (`<serving>/{item,user}_tower/<v>`)."""
    tower_dir = os.path.dirname(item_tower_path.rstrip("/"))
    if os.path.basename(tower_dir) != "item_tower":
        raise ArtifactError(
            f"{item_tower_path} is not a pushed item tower (<serving>/item_tower/<v>)"
        )
    return os.path.join(os.path.dirname(tower_dir), "user_tower", str(int(version)))


class UserTower:
    """The pushed user tower in-process: `query(user_vectors [n, U]) -> [n, 64]`, its bias."""

    def __init__(self, path: str) -> None:
        import tensorflow as tf

        if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            raise ArtifactError(f"no user tower SavedModel at {path}")
        self.path = path
        self._serve = tf.saved_model.load(path).signatures["serving_default"]
        spec = self._serve.structured_input_signature[1]["user_vector"]
        self.user_dim = int(spec.shape[-1])
        self.bias = float(self.outputs(np.zeros((1, self.user_dim), np.float32))["bias"][0, 0])

    def outputs(self, user_vectors: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        out = self._serve(user_vector=tf.constant(np.asarray(user_vectors, np.float32)))
        return {name: value.numpy() for name, value in out.items()}

    def query(self, user_vectors: np.ndarray) -> np.ndarray:
        return self.outputs(user_vectors)["query"]


def align_vectors(
    ids: list[str], source_ids: np.ndarray, source_vectors: np.ndarray, source: str
) -> np.ndarray:
    """Rows of `source_vectors` for `ids` in that order; every id must be found."""
    source_ids = pa.array([i.decode() if isinstance(i, bytes) else str(i) for i in source_ids])
    rows = pc.index_in(pa.array(ids, pa.string()), value_set=source_ids).to_numpy(
        zero_copy_only=False
    )
    missing = np.flatnonzero(np.isnan(rows)) if rows.dtype.kind == "f" else np.empty(0, int)
    if len(missing):
        raise ArtifactError(
            f"{len(missing)} embedded item(s) have no pretrained vector in {source}, "
            f"e.g. {ids[missing[0]]!r}"
        )
    return np.ascontiguousarray(source_vectors[rows.astype(np.int64)], dtype=np.float32)


def catalogue_vectors(path: str, item_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an item catalogue (CSV or word2vec text)."""
    from components.item_embeddings.catalogue import iter_catalogue

    chunks = list(iter_catalogue(path, item_dim))
    if not chunks:
        raise ArtifactError(f"item catalogue {path} is empty")
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def example_item_vectors(patterns: list[str], item_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the distinct items of TFRecord Examples (`item_id`, `item_vector`)."""
    import tensorflow as tf

    from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR

    files = [f for pattern in patterns for f in tf.io.gfile.glob(pattern)]
    if not files:
        raise ArtifactError(f"no Examples found at {patterns}")
    spec = {
        ITEM_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        ITEM_VECTOR: tf.io.FixedLenFeature([item_dim], tf.float32),
    }
    ids, vectors = [], []
    for compressed in (False, True):  # TFX's readers too tell compression by the file name
        group = [f for f in files if f.endswith(".gz") == compressed]
        if not group:
            continue
        dataset = tf.data.TFRecordDataset(group, compression_type="GZIP" if compressed else "")
        for batch in dataset.batch(65536).map(lambda records: tf.io.parse_example(records, spec)):
            ids.append(batch[ITEM_ID].numpy())
            vectors.append(batch[ITEM_VECTOR].numpy())
    ids_all, vectors_all = np.concatenate(ids), np.concatenate(vectors)
    _, first = np.unique(ids_all, return_index=True)
    first.sort()
    return ids_all[first], vectors_all[first]


def sample_queries(
    tower: UserTower, item_vectors: np.ndarray | None, count: int, seed: int
) -> tuple[np.ndarray, str]:
    """Seeded recall-test queries `[count, 64]` through the user tower, and how they were made.

    Users in serving are the mean of their last items' pretrained vectors, so the sample is
    the mean of `RECALL_HISTORY` random items' vectors where those are in the user space;
    else standard-normal user vectors.
    """
    rng = np.random.default_rng(seed)
    if item_vectors is not None and item_vectors.shape[1] == tower.user_dim:
        picks = rng.integers(0, len(item_vectors), size=(count, RECALL_HISTORY))
        users, how = item_vectors[picks].mean(axis=1), f"mean of {RECALL_HISTORY} random items"
    else:
        users = rng.standard_normal((count, tower.user_dim)).astype(np.float32)
        how = "standard-normal user vectors"
    return tower.query(users.astype(np.float32)), how


def ann_recall(index, queries: np.ndarray, embeddings: np.ndarray, k: int = RECALL_K) -> float:
    """The index's recall@k against exact inner-product search on `queries`."""
    from components.retrieval_eval.metrics import index_recall

    return index_recall(index, queries, embeddings, min(k, len(embeddings)))


def build_ann_index(
    final: Path,
    ids: list[str],
    embeddings: np.ndarray,
    backend: str,
    queries: np.ndarray,
    item_vectors: np.ndarray | None,
    extra: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, measure and save the ANN index at `final` (staged, then renamed into place)."""
    from serving.index import make_index, read_manifest

    index = make_index(backend, **(params or {})).build(embeddings, ids)
    recall = ann_recall(index, queries, embeddings)
    extra = {
        **extra,
        "publish_format": PUBLISH_FORMAT,
        "recall_k": min(RECALL_K, len(ids)),
        "ann_recall": recall,
        "recall_queries": len(queries),
        "item_vectors": ITEM_VECTORS_FILE if item_vectors is not None else None,
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        index.save(staging, manifest_extra=extra)
        if item_vectors is not None:
            np.save(staging / ITEM_VECTORS_FILE, np.ascontiguousarray(item_vectors, np.float32))
        os.rename(staging, final)  # fails if another run put `final` there first
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(final)


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
    reason = f"published {report.items} items as {report.version} (was {report.previous})"
    logging.info("%s in %.1f s", reason, report.seconds)
    return StoreOutcome(True, report.version, report.version, reason, report.to_dict())


def check_backend(backend: str) -> str:
    from serving.index import BACKENDS

    if backend not in BACKENDS:
        raise DataError(f"ann_backend {backend!r} is not one of {sorted(BACKENDS)}")
    return backend
