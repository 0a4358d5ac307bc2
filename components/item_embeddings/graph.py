"""The ItemEmbeddings Beam graph: items -> one vector per id -> the item tower -> Parquet.

It streams. A catalogue is read in chunks, each id once (its first line), and the chunks go
through the item tower as they come; the Examples' items take a combine first (one vector
per id). Beam writes a Parquet file a bundle, joined into one file at the end. With a
catalogue it also counts the training items the catalogue lacks (an anti-join of sorted id
arrays). At a million items nothing keeps a Python object per item: a combine over the
catalogue cost 2.4 GB and 27 s, a fixed single shard (a GroupByKey of all tables) 1.1 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf

from components.common.names import EMBEDDINGS_FILE
from components.common.paths import join, split_patterns
from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR, vector_ids
from components.item_embeddings.catalogue import iter_distinct_catalogue
from components.item_embeddings.embeddings import (
    EMBEDDINGS_SCHEMA,
    build_manifest,
    embeddings_table,
    join_shards,
    write_manifest,
)
from components.pusher.pushed import PushedTowers

EMBED_BATCH = 8192
SHARDS_DIR = "_shards"  # Beam's files, a bundle each, joined into one


@dataclass(frozen=True)
class ItemSource:
    """What to embed: a catalogue file (ids matched on the Examples' `item_id` when
    `by_id`, else on the hash of the vectors), or None for the Examples' distinct items."""

    catalogue: str | None
    item_dim: int
    by_id: bool = False


def _decoded_schema(with_vectors: bool) -> bytes:
    """The features the decoder reads: the item ids, and their vectors when they are to be
    embedded (the ids alone for a catalogue's anti-join: at 6.3M lines decoding the 256
    floats of every Example it does not use was most of this job's time)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    schema.feature.add(name=ITEM_ID, type=schema_pb2.BYTES)
    if with_vectors:
        schema.feature.add(name=ITEM_VECTOR, type=schema_pb2.FLOAT)
    return schema.SerializeToString()


def _example_items(record_batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
    ids = record_batch.column(record_batch.schema.get_field_index(ITEM_ID))
    ids = ids.flatten().to_numpy(zero_copy_only=False)
    if record_batch.schema.get_field_index(ITEM_VECTOR) < 0:
        return ids, None
    vectors = record_batch.column(record_batch.schema.get_field_index(ITEM_VECTOR))
    dim = len(vectors[0]) if len(vectors) else 0
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return ids, flat.reshape(-1, dim)


class _Embed(beam.DoFn):
    """(ids [n], vectors [n, I]) -> pyarrow Tables (item_id, embedding) through the item
    tower, `EMBED_BATCH` rows a call."""

    def __init__(self, tower_uri: str):
        self._tower_uri = tower_uri
        self._serve = None

    def setup(self):
        self._serve = tf.saved_model.load(self._tower_uri).signatures["serving_default"]

    def process(self, chunk: tuple[np.ndarray, np.ndarray]):
        ids, vectors = chunk
        for start in range(0, len(ids), EMBED_BATCH):
            batch = tf.constant(np.asarray(vectors[start : start + EMBED_BATCH], np.float32))
            out = self._serve(item_vector=batch)["item_embedding"].numpy()
            yield embeddings_table(list(ids[start : start + EMBED_BATCH]), out)


def _as_chunk(rows: list[tuple[bytes, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([i for i, _ in rows], dtype=object), np.stack([v for _, v in rows])


def _distinct_rows(batch: tuple[np.ndarray, np.ndarray]):
    """(id, vector) once per id of a batch (most repeats of a training item are near)."""
    ids, vectors = batch
    _, first = np.unique(ids.astype(bytes), return_index=True)
    for row in np.sort(first):
        yield bytes(ids[row]) if not isinstance(ids[row], str) else ids[row].encode(), vectors[row]


class _OneVector(beam.CombineFn):
    """One vector per id, whatever the order: the smallest by bytes (ids from the vectors'
    hash have one vector; an id given two vectors keeps a deterministic one)."""

    def create_accumulator(self):
        return None

    def add_input(self, best, vector):
        return vector if best is None or vector.tobytes() < best.tobytes() else best

    def merge_accumulators(self, accumulators):
        best = None
        for vector in accumulators:
            if vector is not None:
                best = self.add_input(best, vector)
        return best

    def extract_output(self, best):
        return best


def _sum_counts(pairs) -> tuple[int, int]:
    """(rows, dim) over tables: rows add up, the dim is the tables' (0 with no table)."""
    rows, dim = 0, 0
    for count, width in pairs:
        rows, dim = rows + count, max(dim, width)
    return rows, dim


def _table_size(table: pa.Table) -> tuple[int, int]:
    column = table.column("embedding")
    return table.num_rows, len(column[0]) if table.num_rows else 0


@beam.ptransform_fn
def _read_example_items(pipeline, examples, with_vectors: bool):
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder(_decoded_schema(with_vectors))
    return (
        pipeline
        | "Patterns" >> beam.Create(split_patterns(examples))
        | "Read" >> beam.io.ReadAllFromTFRecord()
        | "Batch" >> beam.BatchElements(min_batch_size=4096, max_batch_size=65536)
        | "Decode" >> beam.Map(lambda records: _example_items(decoder.DecodeBatch(records)))
    )


class _DistinctIds(beam.CombineFn):
    """The distinct ids of arrays of ids, as one sorted fixed-width bytes array: a million
    ids take ~30 MB this way, where a CoGroupByKey keeps a Python object per id and row."""

    COMPACT_EVERY = 64

    def create_accumulator(self) -> list[np.ndarray]:
        return []

    def add_input(self, parts: list[np.ndarray], ids: np.ndarray) -> list[np.ndarray]:
        parts.append(np.unique(ids))
        return [self.extract_output(parts)] if len(parts) >= self.COMPACT_EVERY else parts

    def merge_accumulators(self, accumulators) -> list[np.ndarray]:
        return [self.extract_output([part for parts in accumulators for part in parts])]

    def extract_output(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype="S1")


def _count_missing(training_ids: np.ndarray, catalogue_ids: np.ndarray) -> int:
    return int((~np.isin(training_ids, catalogue_ids, assume_unique=True)).sum())


@beam.ptransform_fn
def _unmatched_training_items(catalogue_ids, training):
    """How many distinct training ids the catalogue lacks (an anti-join of sorted ids)."""
    training_ids = (
        training
        | "TrainIds" >> beam.Map(lambda b: b[0].astype(bytes))
        | "DistinctTrainIds" >> beam.CombineGlobally(_DistinctIds())
    )
    known = catalogue_ids | "DistinctCatalogueIds" >> beam.CombineGlobally(_DistinctIds())
    return training_ids | "CountUnmatched" >> beam.Map(
        _count_missing, catalogue_ids=beam.pvalue.AsSingleton(known)
    )


def embed_items(
    pipeline: beam.Pipeline, examples, source: ItemSource, towers: PushedTowers, uri: str
) -> None:
    """Add to `pipeline` the steps that write `uri`/{embeddings.parquet, manifest.json}."""
    training = pipeline | "TrainingItems" >> _read_example_items(
        examples, with_vectors=not source.catalogue
    )
    if source.catalogue:
        items = (
            pipeline
            | "Catalogue" >> beam.Create([source.catalogue])
            | "ReadCatalogue" >> beam.FlatMap(lambda p: iter_distinct_catalogue(p, source.item_dim))
        )
        chunks = items
    else:
        items = training
        chunks = (
            items
            | "Rows" >> beam.FlatMap(_distinct_rows)
            | "OnePerId" >> beam.CombinePerKey(_OneVector())
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=EMBED_BATCH)
            | "AsChunk" >> beam.Map(_as_chunk)
        )
    tables = chunks | "Embed" >> beam.ParDo(_Embed(towers.item_tower_uri))
    shards = tables | "Write" >> beam.io.parquetio.WriteToParquetBatched(
        join(uri, SHARDS_DIR, EMBEDDINGS_FILE.removesuffix(".parquet")),
        EMBEDDINGS_SCHEMA,
        file_name_suffix=".parquet",
    )
    _ = (
        shards
        | "Shards" >> beam.combiners.ToList()
        | "OneFile" >> beam.Map(join_shards, join(uri, EMBEDDINGS_FILE))
    )
    sizes = (
        tables
        | "Size per table" >> beam.Map(_table_size)
        | "Size" >> beam.CombineGlobally(_sum_counts)
    )
    if source.catalogue:
        by_id = source.by_id
        catalogue_ids = items | "CatIds" >> beam.Map(
            lambda b: b[0].astype(bytes) if by_id else vector_ids(b[1])
        )
        unmatched = catalogue_ids | "Unmatched" >> _unmatched_training_items(training)
    else:
        unmatched = pipeline | "NoCatalogue" >> beam.Create([0])
    _ = sizes | "Manifest" >> beam.Map(
        lambda size, unmatched: write_manifest(
            uri, build_manifest(towers, size[0], size[1], source.catalogue, unmatched)
        ),
        unmatched=beam.pvalue.AsSingleton(unmatched),
    )
