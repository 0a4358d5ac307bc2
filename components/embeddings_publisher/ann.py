"""The ANN index of one version, as plain functions: the pushed user tower in-process, the
embedded items' pretrained vectors, seeded recall queries, building and measuring the index.

    <output_dir>/ann_index/<version>/   index files, ids.json, item_vectors.npy (pretrained, in
                                        index row order), manifest.json (backend, version,
                                        bias, recall@100 against exact search)

faiss and annoy write local files: the folder is built locally and published complete
(`components.common.publish.staged_dir`), so `output_dir` may be on an object store.
"""

from __future__ import annotations

import io
import logging
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from components.common.errors import ArtifactError
from components.common.names import ANN_DIR, ANN_ITEM_VECTORS, MANIFEST_FILE
from components.common.paths import is_remote, join, open_binary, read_bytes, split_patterns
from components.common.publish import staged_dir

ITEM_VECTORS_FILE = ANN_ITEM_VECTORS
PUBLISH_FORMAT = "finetower.ann_index/1"
RECALL_K = 100
RECALL_QUERIES = 200
RECALL_HISTORY = 5  # sample queries: the user tower over the mean of this many random items
LINE_COUNT_BLOCK = 8 << 20


def ann_uri(output_dir: str, version: int) -> str:
    """`<output_dir>/ann_index/<version>`, local or on an object store."""
    return join(str(output_dir), ANN_DIR, str(int(version)))


class UserTower:
    """The pushed user tower in-process: `query(user_vectors [n, U]) -> [n, dim]`, its bias."""

    def __init__(self, path: str) -> None:
        if not tf.io.gfile.exists(join(path, "saved_model.pb")):
            raise ArtifactError(f"no user tower SavedModel at {path}")
        self.path = str(path)
        self._serve = tf.saved_model.load(self.path).signatures["serving_default"]
        spec = self._serve.structured_input_signature[1]["user_vector"]
        self.user_dim = int(spec.shape[-1])
        self.bias = float(self.outputs(np.zeros((1, self.user_dim), np.float32))["bias"][0, 0])

    def outputs(self, user_vectors: np.ndarray) -> dict[str, np.ndarray]:
        out = self._serve(user_vector=tf.constant(np.asarray(user_vectors, np.float32)))
        return {name: value.numpy() for name, value in out.items()}

    def query(self, user_vectors: np.ndarray) -> np.ndarray:
        return self.outputs(user_vectors)["query"]


def align_vectors(
    ids: list[str], source_ids: np.ndarray, source_vectors: np.ndarray, source: str
) -> np.ndarray:
    """Rows of `source_vectors` for `ids` in that order; every id must be found. When the ids
    are the source's own, in its order (a catalogue embedded as read), the source itself is
    returned: at a million items a copy is 0.5 GB more at the publisher's peak."""
    source_ids = _string_array(source_ids)
    rows = pc.index_in(pa.array(ids, pa.string()), value_set=source_ids).to_numpy(
        zero_copy_only=False
    )
    missing = np.flatnonzero(np.isnan(rows)) if rows.dtype.kind == "f" else np.empty(0, int)
    if len(missing):
        raise ArtifactError(
            f"{len(missing)} embedded item(s) have no pretrained vector in {source}, "
            f"e.g. {ids[missing[0]]!r}"
        )
    rows = rows.astype(np.int64)
    if len(rows) == len(source_vectors) and np.array_equal(rows, np.arange(len(rows))):
        return np.ascontiguousarray(source_vectors, dtype=np.float32)  # no copy if float32
    return np.ascontiguousarray(source_vectors[rows], dtype=np.float32)


def _string_array(ids: np.ndarray) -> pa.Array:
    """Ids (bytes or str) as an Arrow string array, without a Python string per id."""
    if len(ids) and isinstance(ids[0], bytes):
        return pa.array(ids, pa.binary()).cast(pa.string())
    return pa.array([str(i) for i in ids], pa.string())


def _count_lines(path: str) -> int:
    """Lines of a text file (a last line without a newline counts), read in blocks."""
    lines, last = 0, b"\n"
    with open_binary(path) as f:
        while block := f.read(LINE_COUNT_BLOCK):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def catalogue_vectors(path: str, item_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an item catalogue (CSV or word2vec text), each id once (its first
    line, as ItemEmbeddings embedded it). The lines are counted first and the chunks copied
    into arrays of that size as they are parsed: at a million 128-d items in the publisher's
    process, holding the chunks and stacking them left 1.49 GB more resident, this 1.16 GB
    (0.51 GB of it the vectors)."""
    from components.item_embeddings.catalogue import iter_distinct_catalogue

    capacity = _count_lines(path)
    ids = np.empty(capacity, dtype=object)
    vectors = np.empty((capacity, item_dim), np.float32)
    count = 0
    for chunk_ids, chunk_vectors in iter_distinct_catalogue(path, item_dim):
        ids[count : count + len(chunk_ids)] = chunk_ids
        vectors[count : count + len(chunk_ids)] = chunk_vectors
        count += len(chunk_ids)
    if not count:
        raise ArtifactError(f"item catalogue {path} is empty")
    return ids[:count], vectors[:count]


def example_item_vectors(patterns: list[str], item_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the distinct items of TFRecord Examples (`item_id`, `item_vector`)."""
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


@dataclass(frozen=True)
class PretrainedSource:
    """Where the embedded items' pretrained vectors are: a catalogue file (CSV or word2vec
    text), else the Examples (their distinct `item_id`, `item_vector`)."""

    catalogue: str | None
    examples: Any  # an Examples artifact, or None
    item_dim: int


def pretrained_item_vectors(
    ids: list[str], source: PretrainedSource
) -> tuple[np.ndarray | None, str | None]:
    """The pretrained vectors of `ids` in that order, and where they came from (None, None
    when neither a catalogue nor Examples is given)."""
    if source.catalogue is not None:
        source_ids, vectors = catalogue_vectors(source.catalogue, source.item_dim)
        return align_vectors(ids, source_ids, vectors, source.catalogue), source.catalogue
    if source.examples is None:
        logging.warning(
            "no item catalogue and no Examples: the index has no pretrained item vectors "
            "(the recall service cannot turn histories into user vectors)"
        )
        return None, None
    patterns = split_patterns(source.examples)
    source_ids, vectors = example_item_vectors(patterns, source.item_dim)
    uri = source.examples.uri
    return align_vectors(ids, source_ids, vectors, uri), uri


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
    final: str,
    ids: list[str],
    embeddings: np.ndarray,
    backend: str,
    queries: np.ndarray,
    item_vectors: np.ndarray | str | None,
    extra: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, measure and save the ANN index at `final`, published complete; its manifest.
    `item_vectors`: the items' pretrained vectors to save beside it (index row order), or the
    path of a local `.npy` file holding them (moved in), or None."""
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
    with staged_dir(str(final), last=MANIFEST_FILE) as staging:
        index.save(staging, manifest_extra=extra)
        if isinstance(item_vectors, str):  # saved before the index was built: moved in
            shutil.move(item_vectors, staging / ITEM_VECTORS_FILE)
        elif item_vectors is not None:
            np.save(staging / ITEM_VECTORS_FILE, np.ascontiguousarray(item_vectors, np.float32))
        manifest = read_manifest(staging)
    return manifest


def read_index_manifest(folder: str) -> dict[str, Any] | None:
    """The manifest of a published index folder, None when there is none."""
    import json

    path = join(folder, MANIFEST_FILE)
    return json.loads(read_bytes(path)) if tf.io.gfile.exists(path) else None


def read_index_item_vectors(folder: str, manifest: dict[str, Any]) -> np.ndarray | None:
    """The pretrained item vectors saved beside an index (index row order), if any."""
    name = manifest.get("item_vectors")
    if not name:
        return None
    path = join(folder, name)
    if not is_remote(path):  # mapped, not read: pages are loaded as they are used
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
