"""ItemEmbeddings component: spec, Beam executor, component.

After a push, runs the pushed item tower (`serving_default`) over the item catalogue (a
`catalogue` artifact's `catalogue.txt` (SampleGen's, ids the items'), else an `items` file,
else the distinct item vectors of the Examples, ids their hashes) and writes

    <artifact uri>/embeddings.parquet   item_id string, embedding list<float32>[64]
    <artifact uri>/manifest.json        version, model, count, dim, unmatched training items
    <output_dir>/item_embeddings/<version>/  the same two files, renamed into place complete

with the version of the push. The same pushed version is never embedded twice.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR, vector_ids
from components.item_embeddings.catalogue import iter_catalogue
from components.sample_gen.component import CATALOGUE_TEXT, ItemCatalogue

EMBEDDINGS_FILE = "embeddings.parquet"
MANIFEST_FILE = "manifest.json"
EMBED_BATCH = 8192
EMBEDDINGS_SCHEMA = pa.schema([("item_id", pa.string()), ("embedding", pa.list_(pa.float32()))])


class ItemEmbeddingsArtifact(types.Artifact):
    """Item embeddings of one pushed version: embeddings.parquet + manifest.json."""

    TYPE_NAME = "finetower.ItemEmbeddings"


class ItemEmbeddingsSpec(ComponentSpec):
    PARAMETERS = {
        "output_dir": ExecutionParameter(type=str),
        "items": ExecutionParameter(type=str, optional=True),
        "item_dim": ExecutionParameter(type=int),
    }
    INPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "catalogue": ChannelParameter(type=ItemCatalogue, optional=True),
    }
    OUTPUTS = {"item_embeddings": ChannelParameter(type=ItemEmbeddingsArtifact)}


def _example_items(record_batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    ids = record_batch.column(record_batch.schema.get_field_index(ITEM_ID))
    vectors = record_batch.column(record_batch.schema.get_field_index(ITEM_VECTOR))
    dim = len(vectors[0]) if len(vectors) else 0
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return ids.flatten().to_numpy(zero_copy_only=False), flat.reshape(-1, dim)


class _Embed(beam.DoFn):
    """Lists of (id, vector) -> pyarrow Tables (item_id, embedding) through the item tower."""

    def __init__(self, tower_path: str):
        self._tower_path = tower_path
        self._serve = None

    def setup(self):
        self._serve = tf.saved_model.load(self._tower_path).signatures["serving_default"]

    def process(self, rows: list[tuple[bytes, np.ndarray]]):
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i, _ in rows]
        vectors = tf.constant(np.stack([v for _, v in rows]).astype(np.float32))
        out = self._serve(item_vector=vectors)["item_embedding"].numpy()
        yield embeddings_table(ids, out)


def embeddings_table(ids: list[str], embeddings: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.FixedSizeListArray.from_arrays(
                pa.array(embeddings.ravel(), pa.float32()), embeddings.shape[1]
            ).cast(pa.list_(pa.float32())),
        ],
        schema=EMBEDDINGS_SCHEMA,
    )


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


def write_embeddings(path: str, batches: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write (item_id, embedding) batches as one Parquet file; return the row count."""
    ids = np.concatenate([b[0] for b in batches]) if batches else np.empty(0, object)
    emb = np.concatenate([b[1] for b in batches]) if batches else np.empty((0, 64), np.float32)
    dim = emb.shape[1]
    table = pa.table(
        {
            "item_id": pa.array(
                [i.decode() if isinstance(i, bytes) else str(i) for i in ids], pa.string()
            ),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(emb.ravel(), pa.float32()), dim
            ).cast(pa.list_(pa.float32())),
        }
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue().to_pybytes())
    return len(ids)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        pushed = artifact_utils.get_single_instance(input_dict["pushed_model"])
        out = artifact_utils.get_single_instance(output_dict["item_embeddings"])
        if not pushed.get_int_custom_property("pushed"):
            logging.info("nothing was pushed: no item embeddings")
            out.set_int_custom_property("count", 0)
            return
        version = pushed.get_int_custom_property("pushed_version")
        tower = pushed.get_string_custom_property("item_tower_path")
        published = os.path.join(exec_properties["output_dir"], "item_embeddings", str(version))
        out.set_int_custom_property("version", version)
        out.set_string_custom_property("published_dir", published)
        if tf.io.gfile.exists(os.path.join(published, MANIFEST_FILE)):
            with tf.io.gfile.GFile(os.path.join(published, MANIFEST_FILE)) as f:
                manifest = json.load(f)
            logging.info("version %d already embedded (%d items)", version, manifest["count"])
        else:
            manifest = self._embed(input_dict, exec_properties, tower, version, out.uri)
            _publish(out.uri, published)
        out.set_int_custom_property("count", manifest["count"])

    def _embed(self, input_dict, exec_properties, tower: str, version: int, uri: str) -> dict:
        items = exec_properties.get("items") or None
        # a catalogue artifact's ids are the Examples' item_id: match on ids, not vectors
        catalogues = input_dict.get("catalogue") or []
        by_id = bool(catalogues)
        if by_id:
            items = os.path.join(catalogues[0].uri, CATALOGUE_TEXT)
        item_dim = exec_properties["item_dim"]
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        with self._make_beam_pipeline() as pipeline:
            training = pipeline | "TrainingItems" >> _read_example_items(examples)
            if items:
                source = (
                    pipeline
                    | "Catalogue" >> beam.Create([items])
                    | "ReadCatalogue" >> beam.FlatMap(lambda p: iter_catalogue(p, item_dim))
                )
            else:
                source = training
            # streams: one (id, vector) per item after a combine, embedded in batches and
            # written as one Parquet file (nothing holds all items at once)
            tables = (
                source
                | "Rows" >> beam.FlatMap(_distinct_rows)
                | "OnePerId" >> beam.CombinePerKey(_OneVector())
                | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=EMBED_BATCH)
                | "Embed" >> beam.ParDo(_Embed(tower))
            )
            _ = tables | "Write" >> beam.io.parquetio.WriteToParquetBatched(
                os.path.join(uri, EMBEDDINGS_FILE.removesuffix(".parquet")),
                EMBEDDINGS_SCHEMA,
                num_shards=1,
                shard_name_template="",
                file_name_suffix=".parquet",
            )
            counts = (
                tables
                | "Rows per table" >> beam.Map(lambda table: table.num_rows)
                | "Count" >> beam.CombineGlobally(sum)
            )
            if items:
                catalogue_ids = source | "CatIds" >> beam.FlatMap(
                    lambda b: (b[0].astype(bytes) if by_id else vector_ids(b[1])).tolist()
                )
                training_ids = training | "TrainIds" >> beam.FlatMap(
                    lambda b: set(b[0].astype(bytes).tolist())
                )
                unmatched = (  # an anti-join: training ids the catalogue lacks
                    {
                        "train": training_ids | "KeyTrain" >> beam.Map(lambda i: (i, None)),
                        "catalogue": catalogue_ids | "KeyCat" >> beam.Map(lambda i: (i, None)),
                    }
                    | "Join" >> beam.CoGroupByKey()
                    | "Unmatched"
                    >> beam.Filter(lambda kv: kv[1]["train"] and not kv[1]["catalogue"])
                    | "CountUnmatched" >> beam.combiners.Count.Globally()
                )
            else:
                unmatched = pipeline | "NoCatalogue" >> beam.Create([0])
            _ = counts | "Manifest" >> beam.Map(
                _write_manifest,
                uri=uri,
                version=version,
                tower=tower,
                items=items,
                unmatched=beam.pvalue.AsSingleton(unmatched),
            )
        with tf.io.gfile.GFile(os.path.join(uri, MANIFEST_FILE)) as f:
            return json.load(f)


def _write_manifest(count: int, uri: str, version: int, tower: str, items, unmatched: int) -> None:
    manifest = {
        "version": version,
        "model": tower,
        "count": int(count),
        "dim": 64,
        "source": items or "distinct item vectors of the Examples",
        "unmatched_training_items": int(unmatched) if items else 0,
    }
    if items and unmatched:
        logging.warning("%d training item vector(s) are not in the catalogue %s", unmatched, items)
    with tf.io.gfile.GFile(os.path.join(uri, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2)


@beam.ptransform_fn
def _read_example_items(pipeline, examples):
    from tfx_bsl.coders import example_coder

    patterns = [
        os.path.join(artifact_utils.get_split_uri([examples], split), "*")
        for split in artifact_utils.decode_split_names(examples.split_names)
    ]
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    return (
        pipeline
        | "Patterns" >> beam.Create(patterns)
        | "Read" >> beam.io.ReadAllFromTFRecord()
        | "Batch" >> beam.BatchElements(min_batch_size=4096, max_batch_size=65536)
        | "Decode" >> beam.Map(lambda records: _example_items(decoder.DecodeBatch(records)))
    )


def _publish(uri: str, published: str) -> None:
    """Copy the artifact's files to `published`, renamed into place complete."""
    parent = os.path.dirname(published)
    tf.io.gfile.makedirs(parent)
    staging = os.path.join(parent, f".tmp-{os.path.basename(published)}-{uuid.uuid4().hex[:8]}")
    tf.io.gfile.makedirs(staging)
    for name in (EMBEDDINGS_FILE, MANIFEST_FILE):
        tf.io.gfile.copy(os.path.join(uri, name), os.path.join(staging, name))
    tf.io.gfile.rename(staging, published)


class ItemEmbeddings(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = ItemEmbeddingsSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        pushed_model: types.BaseChannel,
        examples: types.BaseChannel,
        output_dir: str,
        item_dim: int = 128,
        items: str | None = None,
        catalogue: types.BaseChannel | None = None,
    ):
        spec = ItemEmbeddingsSpec(
            pushed_model=pushed_model,
            examples=examples,
            catalogue=catalogue,
            output_dir=output_dir,
            items=items,
            item_dim=item_dim,
            item_embeddings=types.Channel(type=ItemEmbeddingsArtifact),
        )
        super().__init__(spec=spec)
