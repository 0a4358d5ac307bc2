"""SampleGen component: spec, executor, component.

From the target placement's behaviour log and pretrained item vectors (an Item2Vec artifact),
builds fine-tuning samples with `samples.build_samples` and writes them as the recipe's
Examples, so StatisticsGen, the schema, Transform, Trainer and Evaluator take them unchanged:

    examples   Split-train/, Split-eval/  tf.Examples `label` int64, `user_vector` and
               `item_vector` float32 of the vectors' size, `item_id` and `user_id` bytes
               (TFRecord shards, uncompressed like RecipeCsvExampleGen's; TFX's readers
               detect compression by file name)
    catalogue  catalogue.txt      word2vec text: every item with a pretrained vector (what
                                  ItemEmbeddings embeds and retrieval is evaluated over)
               catalogue.parquet  item, train_count, val_count (target events per item)
    held_out   {train,val,test}_interactions.parquet, histories.parquet, manifest.json

Positives are the target log's events; `negatives` items per positive (4, uniform by
default, seeded) are drawn from the target's items, never one of the user's own target
items. The split is by time per user: the last event is held out for retrieval evaluation
(`test`), the one before it is the `eval` split (validation and Evaluator), the rest train.
A sample's user vector is the mean of the pretrained vectors of the user's last `last_n`
(5) items strictly before the sample's time, from the history log (the data-rich domain)
and the target's train events; held-out events never enter one.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import HeldOutInteractions, Item2VecVectors, ItemCatalogue
from components.common.names import (
    CATALOGUE_TABLE,
    CATALOGUE_TEXT,
    HISTORIES_TABLE,
    MANIFEST_FILE,
    interactions_table,
)
from components.common.paths import (
    absolute,
    input_fingerprint,
    join,
    local_copy,
    local_tree,
    upload_files,
)
from components.common.vectors import Vectors, write_vectors
from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR, LABEL, USER_ID, USER_VECTOR
from components.sample_gen.config import SPLITS, SampleConfig
from components.sample_gen.inputs import load_item_vectors
from components.sample_gen.samples import SampleRows, build_samples

# build_samples' split -> the Examples split (test stays out: it is the retrieval hold-out)
EXAMPLE_SPLITS = {"train": "train", "val": "eval"}
SHARD_NAME = "data-00000.tfrecord"
HELD_OUT_FILES = (
    *(interactions_table(split) for split in SPLITS),
    HISTORIES_TABLE,
    MANIFEST_FILE,
)


class SampleGenSpec(ComponentSpec):
    PARAMETERS = {
        "target_log": ExecutionParameter(type=str),
        "history_log": ExecutionParameter(type=str, optional=True),
        "log_fingerprint": ExecutionParameter(type=str, optional=True),
        "negatives": ExecutionParameter(type=int),
        "negative_sampling": ExecutionParameter(type=str),
        "last_n": ExecutionParameter(type=int),
        "min_weight": ExecutionParameter(type=float, optional=True),
        "seed": ExecutionParameter(type=int),
    }
    INPUTS = {"item_vectors": ChannelParameter(type=Item2VecVectors)}
    OUTPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "catalogue": ChannelParameter(type=ItemCatalogue),
        "held_out": ChannelParameter(type=HeldOutInteractions),
    }


def _lists(values: np.ndarray) -> pa.ListArray:
    """`values [n, width]` as a list column of n rows."""
    values = np.ascontiguousarray(values).reshape(len(values), -1)
    offsets = pa.array(np.arange(0, values.size + 1, max(values.shape[1], 1), dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))


def to_record_batch(rows: SampleRows) -> pa.RecordBatch:
    """The rows as the Arrow columns of their tf.Examples (each feature a list column)."""
    n = len(rows)
    one = pa.array(np.arange(n + 1, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [
            _lists(rows.labels.astype(np.int64)),
            _lists(rows.user_vectors.astype(np.float32, copy=False)),
            _lists(rows.item_vectors.astype(np.float32, copy=False)),
            pa.ListArray.from_arrays(one, rows.item_ids.cast(pa.binary())),
            pa.ListArray.from_arrays(one, rows.user_ids.cast(pa.binary())),
        ],
        [LABEL, USER_VECTOR, ITEM_VECTOR, ITEM_ID, USER_ID],
    )


class ExamplesWriter:
    """A SampleSink writing each split's rows as tf.Examples into the Examples artifact."""

    def __init__(self, examples: types.Artifact):
        from tfx_bsl.coders import example_coder

        self._encoder = example_coder.RecordBatchToExamplesEncoder()
        self._writers: dict[str, tf.io.TFRecordWriter] = {}
        self.rows = dict.fromkeys(EXAMPLE_SPLITS.values(), 0)
        for name in EXAMPLE_SPLITS.values():
            uri = artifact_utils.get_split_uri([examples], name)
            tf.io.gfile.makedirs(uri)
            self._writers[name] = tf.io.TFRecordWriter(join(uri, SHARD_NAME))

    def __call__(self, split: str, rows: SampleRows) -> None:
        name = EXAMPLE_SPLITS.get(split)
        if name is None or len(rows) == 0:
            return
        writer = self._writers[name]
        for record in self._encoder.encode(to_record_batch(rows)):
            writer.write(record)
        self.rows[name] += len(rows)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def sample_config(exec_properties: dict[str, Any]) -> SampleConfig:
    return SampleConfig(
        negatives=int(exec_properties["negatives"]),
        negative_sampling=exec_properties.get("negative_sampling") or "uniform",
        split="time",
        last_n=int(exec_properties["last_n"]),
        min_weight=exec_properties.get("min_weight"),
        text=False,
        seed=int(exec_properties["seed"]),
    )


def write_catalogue(uri: str, item_vectors: Vectors, held_out_dir: Path) -> int:
    """catalogue.txt (every item with a vector) and its target counts; return its size."""
    counts = {}
    for split in ("train", "val"):
        items = pq.read_table(held_out_dir / interactions_table(split))["item"]
        ids, n = np.unique(items.to_numpy(zero_copy_only=False).astype(str), return_counts=True)
        counts[split] = dict(zip(ids.tolist(), n.tolist(), strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        write_vectors(Path(tmp) / CATALOGUE_TEXT, item_vectors)
        pq.write_table(
            pa.table(
                {
                    "item": pa.array(item_vectors.ids, pa.string()),
                    **{
                        f"{split}_count": pa.array(
                            [counts[split].get(i, 0) for i in item_vectors.ids], pa.int64()
                        )
                        for split in ("train", "val")
                    },
                }
            ),
            Path(tmp) / CATALOGUE_TABLE,
        )
        upload_files(tmp, (CATALOGUE_TEXT, CATALOGUE_TABLE), uri)
    return len(item_vectors)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        vectors_uri = artifact_utils.get_single_instance(input_dict["item_vectors"]).uri
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        catalogue = artifact_utils.get_single_instance(output_dict["catalogue"])
        held_out = artifact_utils.get_single_instance(output_dict["held_out"])
        examples.split_names = artifact_utils.encode_split_names(list(EXAMPLE_SPLITS.values()))
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)

        config = sample_config(exec_properties)
        writer = ExamplesWriter(examples)
        with contextlib.ExitStack() as stack:  # gensim and pyarrow read local copies of URIs
            target = stack.enter_context(local_copy(exec_properties["target_log"]))
            history = stack.enter_context(local_copy(exec_properties.get("history_log") or None))
            vectors_dir = stack.enter_context(local_tree(vectors_uri))
            out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "samples"
            try:
                manifest = build_samples(
                    target, vectors_dir, out, source=history, config=config, sink=writer
                )
            finally:
                writer.close()
            upload_files(out, HELD_OUT_FILES, held_out.uri)
            item_vectors, _ = load_item_vectors(vectors_dir)
            size = write_catalogue(catalogue.uri, item_vectors, out)
        for name, rows in writer.rows.items():
            examples.set_int_custom_property(f"{name}_rows", rows)
        held_out.set_int_custom_property("last_n", config.last_n)
        held_out.set_int_custom_property("test_events", manifest["splits"]["test"]["events"])
        catalogue.set_int_custom_property("count", size)
        logging.info("sample_gen: %s rows; catalogue of %d items", writer.rows, size)


def check_parameters(exec_properties: dict[str, Any]) -> None:
    """Raise a ValueError naming a bad parameter, when the pipeline is built (not mid-run)."""
    sample_config(exec_properties)


class SampleGen(base_component.BaseComponent):
    """Examples (train/eval), the item catalogue and the held-out events of a target log."""

    SPEC_CLASS = SampleGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        item_vectors: types.BaseChannel,
        target_log: str,
        *,
        history_log: str | None = None,
        negatives: int = 4,
        negative_sampling: str = "uniform",
        last_n: int = 5,
        min_weight: float | None = None,
        seed: int = 0,
    ):
        target_log = absolute(target_log)
        history_log = absolute(history_log) if history_log else None
        parameters = {
            "target_log": target_log,
            "history_log": history_log,
            "log_fingerprint": input_fingerprint(target_log, history_log),
            "negatives": negatives,
            "negative_sampling": negative_sampling,
            "last_n": last_n,
            "min_weight": min_weight,
            "seed": seed,
        }
        check_parameters(parameters)
        spec = SampleGenSpec(
            **parameters,
            item_vectors=item_vectors,
            examples=types.Channel(type=standard_artifacts.Examples),
            catalogue=types.Channel(type=ItemCatalogue),
            held_out=types.Channel(type=HeldOutInteractions),
        )
        super().__init__(spec=spec)
