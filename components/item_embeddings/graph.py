"""The ItemEmbeddings Beam graph: items -> one vector per id -> the item tower -> Parquet.

It streams: one (id, vector) per item after a combine, embedded in batches and written as
one Parquet file (nothing holds all items at once). With a catalogue it also counts the
training items the catalogue lacks (an anti-join on ids).
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
from components.item_embeddings.catalogue import iter_catalogue
from components.item_embeddings.embeddings import (
    EMBEDDINGS_SCHEMA,
    build_manifest,
    embeddings_table,
    write_manifest,
)
from components.pusher.pushed import PushedTowers

EMBED_BATCH = 8192


@dataclass(frozen=True)
class ItemSource:
    """What to embed: a catalogue file (ids matched on the Examples' `item_id` when
    `by_id`, else on the hash of the vectors), or None for the Examples' distinct items."""

    catalogue: str | None
    item_dim: int
    by_id: bool = False


def _example_items(record_batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    ids = record_batch.column(record_batch.schema.get_field_index(ITEM_ID))
    vectors = record_batch.column(record_batch.schema.get_field_index(ITEM_VECTOR))
    dim = len(vectors[0]) if len(vectors) else 0
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return ids.flatten().to_numpy(zero_copy_only=False), flat.reshape(-1, dim)


class _Embed(beam.DoFn):
    """Lists of (id, vector) -> pyarrow Tables (item_id, embedding) through the item tower."""

    def __init__(self, tower_uri: str):
        self._tower_uri = tower_uri
        self._serve = None

    def setup(self):
        self._serve = tf.saved_model.load(self._tower_uri).signatures["serving_default"]

    def process(self, rows: list[tuple[bytes, np.ndarray]]):
        vectors = tf.constant(np.stack([v for _, v in rows]).astype(np.float32))
        out = self._serve(item_vector=vectors)["item_embedding"].numpy()
        yield embeddings_table([i for i, _ in rows], out)


def _distinct_rows(batch: tuple[np.ndarray, np.ndarray]):
    """(id, vector) once per id of a batch (most repeats of a training item are near)."""
    ids, vectors = batch
    _, first = np.unique(ids.astype(bytes), return_index=True)
    for row in np.sort(first):
        yield bytes(ids[row]) if not isinstance(ids[row], str) else ids[row].encode(), vectors[row]


class _OneVector(beam.CombineFn):
    """One vector per id, whatever the order: the smallest by bytes (ids from the vectors'
    hash have one vector; a catalogue's repeated id keeps a deterministic one)."""

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
def _read_example_items(pipeline, examples):
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder()
    return (
        pipeline
        | "Patterns" >> beam.Create(split_patterns(examples))
        | "Read" >> beam.io.ReadAllFromTFRecord()
        | "Batch" >> beam.BatchElements(min_batch_size=4096, max_batch_size=65536)
        | "Decode" >> beam.Map(lambda records: _example_items(decoder.DecodeBatch(records)))
    )


@beam.ptransform_fn
def _unmatched_training_items(catalogue_ids, training):
    """How many training ids the catalogue lacks (an anti-join)."""
    training_ids = training | "TrainIds" >> beam.FlatMap(lambda b: set(b[0].astype(bytes).tolist()))
    return (
        {
            "train": training_ids | "KeyTrain" >> beam.Map(lambda i: (i, None)),
            "catalogue": catalogue_ids | "KeyCat" >> beam.Map(lambda i: (i, None)),
        }
        | "Join" >> beam.CoGroupByKey()
        | "Unmatched" >> beam.Filter(lambda kv: kv[1]["train"] and not kv[1]["catalogue"])
        | "CountUnmatched" >> beam.combiners.Count.Globally()
    )


def embed_items(
    pipeline: beam.Pipeline, examples, source: ItemSource, towers: PushedTowers, uri: str
) -> None:
    """Add to `pipeline` the steps that write `uri`/{embeddings.parquet, manifest.json}."""
    training = pipeline | "TrainingItems" >> _read_example_items(examples)
    items = training
    if source.catalogue:
        items = (
            pipeline
            | "Catalogue" >> beam.Create([source.catalogue])
            | "ReadCatalogue" >> beam.FlatMap(lambda p: iter_catalogue(p, source.item_dim))
        )
    tables = (
        items
        | "Rows" >> beam.FlatMap(_distinct_rows)
        | "OnePerId" >> beam.CombinePerKey(_OneVector())
        | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=EMBED_BATCH)
        | "Embed" >> beam.ParDo(_Embed(towers.item_tower_uri))
    )
    _ = tables | "Write" >> beam.io.parquetio.WriteToParquetBatched(
        join(uri, EMBEDDINGS_FILE.removesuffix(".parquet")),
        EMBEDDINGS_SCHEMA,
        num_shards=1,
        shard_name_template="",
        file_name_suffix=".parquet",
    )
    sizes = (
        tables
        | "Size per table" >> beam.Map(_table_size)
        | "Size" >> beam.CombineGlobally(_sum_counts)
    )
    if source.catalogue:
        by_id = source.by_id
        catalogue_ids = items | "CatIds" >> beam.FlatMap(
            lambda b: (b[0].astype(bytes) if by_id else vector_ids(b[1])).tolist()
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
