"""A real tf.Transform output on tiny data, made with tf.Transform's Beam implementation."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from components.transform.preprocessing import preprocessing_fn
from pipeline.configs import BEAM_IN_MEMORY


def raw_feature_spec(user_dim: int, item_dim: int) -> dict:
    return {
        "label": tf.io.FixedLenFeature([1], tf.int64),
        "user_vector": tf.io.FixedLenFeature([user_dim], tf.float32),
        "item_vector": tf.io.FixedLenFeature([item_dim], tf.float32),
    }


def analyze(folder: Path, labels, users, items, normalize: str = "zscore"):
    """(TFTransformOutput, the transformed rows) for `normalize` over these samples."""
    instances = [
        {"label": [int(label)], "user_vector": u, "item_vector": i}
        for label, u, i in zip(labels, users, items, strict=True)
    ]
    spec = raw_feature_spec(users.shape[1], items.shape[1])
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    out = folder / "transformed.tfrecord"
    with (
        beam.Pipeline(argv=BEAM_IN_MEMORY) as pipeline,
        tft_beam.Context(temp_dir=str(folder / "tmp")),
    ):
        raw = pipeline | beam.Create(instances)
        (transformed, transformed_metadata), transform_fn = (
            raw,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(
            lambda x: preprocessing_fn(x, {"normalize": normalize})
        )
        coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
        _ = (
            transformed
            | beam.Map(coder.encode)
            | beam.io.WriteToTFRecord(str(out), shard_name_template="")
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(folder / "transform"))
    # TFX's Transform also writes the raw metadata, which the Trainer reads the Examples by
    metadata_io.write_metadata(metadata, str(folder / "transform" / "metadata"))
    rows = []
    for record in tf.data.TFRecordDataset(str(out)):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        rows.append(
            {
                "label": np.array(feature["label"].int64_list.value),
                "user_vector": np.array(feature["user_vector"].float_list.value, np.float32),
                "item_vector": np.array(feature["item_vector"].float_list.value, np.float32),
            }
        )
    return tft.TFTransformOutput(str(folder / "transform")), rows


def random_samples(n: int, user_dim: int, item_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = (rng.normal(size=(n, user_dim)) * rng.uniform(0.1, 3, user_dim) + 2).astype(np.float32)
    items = (rng.normal(size=(n, item_dim)) * 0.2 - 1).astype(np.float32)
    return rng.integers(0, 2, n), users, items
