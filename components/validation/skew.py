"""SkewCheck: the user vectors the recall service served against the ones training saw.

The recall service logs a seeded sample of the user vectors it sends to the user tower
(`python -m serving.recall --serving_log DIR`: CSV files, header u1..uD; serving/recall/
skew_log.py). This step reads that log's newest rows and a bounded sample of the new span's
training `user_vector`s (up to `skew_max_rows` each), computes TFDV statistics of both with
one feature per dimension (u1..uD: a skewed dimension is named, where a histogram of all 128
values at once would hide it), and compares them with TFDV's skew comparator
(Jensen-Shannon divergence per dimension, threshold `skew_vector_js` in pipeline/configs.py).
Both statistics go into an ExampleStatistics artifact (splits `train` and `serving`),
TFDV's Anomalies into an ExampleAnomalies artifact with custom properties `skew_feature`,
`skew_distance`, `skew_over_threshold`, `skew_message`.

It records and does not stop the run: skew says serving builds its inputs differently from
training (another N, other vectors, a client sending raw vectors from elsewhere), which no
new model trained on today's data repairs, and a stopped run would also keep the served
model from getting today's data. Serving is where to look; the warning names the dimension.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.errors import DataError
from components.common.paths import input_fingerprint
from components.common.serving_log import column_names, log_files
from components.example_gen.recipe_csv import USER_VECTOR
from components.validation.drift import drift_measurements

TRAIN_SPLIT, SERVING_SPLIT = "train", "serving"
STATS_FILE = "FeatureStats.pb"  # TFX's name for a split's statistics
ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's name for a split's anomalies


# -- the two samples --------------------------------------------------------------------------


def read_serving_log(
    folder: str | Path, dim: int, max_rows: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """(vectors [n, dim], files read) of the serving log's files with `dim` columns, the
    newest files first until `max_rows`; files of another size (a version with other
    vectors) are skipped and logged. A file whose header is not u1..uD or whose values are
    not finite numbers is named."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    expected = column_names(dim)
    chunks, used, rows = [], [], 0
    for path in reversed(log_files(folder)):
        if max_rows is not None and rows >= max_rows:
            break
        with path.open() as f:
            header = f.readline().rstrip("\n").split(",")
        if len(header) != dim:
            logging.info(
                "serving log %s: %d-d vectors, training's are %d-d", path, len(header), dim
            )
            continue
        if header != expected:
            raise DataError(f"header is not u1..u{dim}", path, 1)
        try:
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.float32() for name in expected}
                ),
            )
        except pa.ArrowInvalid as error:
            raise DataError(f"not a serving log of {dim}-d vectors: {error}", path) from None
        vectors = table.to_pandas().to_numpy(np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            row = int(np.argmax(~finite))
            raise DataError("NaN, infinity or an empty value", path, row + 2)
        chunks.append(vectors)
        used.append(str(path))
        rows += len(vectors)
    vectors = np.concatenate(chunks[::-1]) if chunks else np.zeros((0, dim), np.float32)
    return vectors[-max_rows:] if max_rows else vectors, used[::-1]


def training_user_vectors(patterns: list[str], dim: int, max_rows: int) -> np.ndarray:
    """Up to `max_rows` training `user_vector`s [n, dim], files read side by side (one file's
    head would be one hash bucket or one time range)."""
    import tensorflow as tf

    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"no training Examples at {patterns}")
    spec = {USER_VECTOR: tf.io.FixedLenFeature([dim], tf.float32)}
    out = []
    for compressed in (False, True):  # TFX's readers tell compression by the file name
        group = [f for f in files if f.endswith(".gz") == compressed]
        if not group:
            continue
        dataset = tf.data.Dataset.from_tensor_slices(group).interleave(
            lambda f, c=compressed: tf.data.TFRecordDataset(f, "GZIP" if c else ""),
            cycle_length=len(group),
        )
        batches = dataset.take(max_rows).batch(8192).map(lambda r: tf.io.parse_example(r, spec))
        out += [batch[USER_VECTOR].numpy() for batch in batches]
    return np.concatenate(out)[:max_rows]


# -- statistics and the comparison ------------------------------------------------------------


def dimension_statistics(vectors: np.ndarray) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of `vectors [n, D]` with one numeric feature per dimension, u1..uD."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    frame = pd.DataFrame(vectors.astype(np.float32), columns=column_names(vectors.shape[1]))
    return tfdv.generate_statistics_from_dataframe(frame)


def with_skew_comparators(
    training: statistics_pb2.DatasetFeatureStatisticsList, threshold: float
) -> schema_pb2.Schema:
    """The schema TFDV infers from the training statistics, a Jensen-Shannon skew comparator
    on each dimension."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.infer_schema(training)
    for feature in schema.feature:
        feature.skew_comparator.jensen_shannon_divergence.threshold = threshold
    return schema


def skew_measurements(anomalies: anomalies_pb2.Anomalies) -> list[tuple[str, str, float, float]]:
    """(feature, comparator, distance, threshold) for each skew TFDV measured."""
    return drift_measurements(anomalies, measured="skew")


def measure_skew(training, serving, threshold: float):
    """(Anomalies, measurements) of the serving statistics against the training ones."""
    import tensorflow_data_validation as tfdv

    schema = with_skew_comparators(training, threshold)
    anomalies = tfdv.validate_statistics(training, schema, serving_statistics=serving)
    return anomalies, skew_measurements(anomalies)


def describe(over: list[tuple[str, str, float, float]], shown: int = 5) -> str:
    """`feature 'u3': jensen_shannon_divergence distance 0.7555 > threshold 0.1; ...`, the
    largest `shown` first, then how many more (the Anomalies artifact holds them all)."""
    ordered = sorted(over, key=lambda m: -m[2])
    text = "; ".join(
        f"feature {f!r}: {kind.lower()} distance {d:.4f} > threshold {t:g}"
        for f, kind, d, t in ordered[:shown]
    )
    more = len(ordered) - shown
    return text + (f"; and {more} more dimension(s)" if more > 0 else "")


# -- the component ----------------------------------------------------------------------------


def _write_proto(folder: str, split: str, name: str, proto) -> None:
    import tensorflow as tf

    path = os.path.join(folder, f"Split-{split}")
    tf.io.gfile.makedirs(path)
    with tf.io.gfile.GFile(os.path.join(path, name), "wb") as f:
        f.write(proto.SerializeToString())


def record(out: types.Artifact, measured, training_rows: int, serving_rows: int) -> str | None:
    """Set the anomalies artifact's custom properties; return the skew message, if any."""
    over = [m for m in measured if m[2] > m[3]]
    worst = max(measured, key=lambda m: m[2], default=None)
    out.set_int_custom_property("training_rows", training_rows)
    out.set_int_custom_property("serving_rows", serving_rows)
    out.set_int_custom_property("skew_over_threshold", int(bool(over)))
    if worst is not None:
        out.set_string_custom_property("skew_feature", worst[0])
        out.set_float_custom_property("skew_distance", worst[2])
    if not over:
        return None
    message = f"serving user vectors skewed from training ({serving_rows} logged): {describe(over)}"
    out.set_string_custom_property("skew_message", message)
    return message


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict):
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        anomalies_out = artifact_utils.get_single_instance(output_dict["anomalies"])
        statistics_out = artifact_utils.get_single_instance(output_dict["statistics"])
        dim = int(exec_properties["user_dim"])
        max_rows = int(exec_properties["max_rows"])
        serving, files = read_serving_log(exec_properties["serving_log"], dim, max_rows)
        anomalies_out.split_names = artifact_utils.encode_split_names([SERVING_SPLIT])
        statistics_out.split_names = artifact_utils.encode_split_names([TRAIN_SPLIT, SERVING_SPLIT])
        if not len(serving):
            logging.warning("serving log %s holds no %d-d rows: no skew measured", files, dim)
            _write_proto(
                anomalies_out.uri, SERVING_SPLIT, ANOMALIES_FILE, anomalies_pb2.Anomalies()
            )
            record(anomalies_out, [], 0, 0)
            return
        pattern = os.path.join(artifact_utils.get_split_uri([examples], TRAIN_SPLIT), "*")
        training = training_user_vectors([pattern], dim, max_rows)
        training_stats, serving_stats = (
            dimension_statistics(training),
            dimension_statistics(serving),
        )
        anomalies, measured = measure_skew(
            training_stats, serving_stats, float(exec_properties["vector_js"])
        )
        _write_proto(statistics_out.uri, TRAIN_SPLIT, STATS_FILE, training_stats)
        _write_proto(statistics_out.uri, SERVING_SPLIT, STATS_FILE, serving_stats)
        _write_proto(anomalies_out.uri, SERVING_SPLIT, ANOMALIES_FILE, anomalies)
        message = record(anomalies_out, measured, len(training), len(serving))
        if message:
            logging.warning("%s", message)
        else:
            logging.info(
                "no skew over %s in %d logged user vectors",
                exec_properties["vector_js"],
                len(serving),
            )


class SkewCheckSpec(ComponentSpec):
    PARAMETERS = {
        "serving_log": ExecutionParameter(type=str),
        # the log's files (names, sizes, times): a log that grew makes the step run again
        "log_fingerprint": ExecutionParameter(type=str, optional=True),
        "user_dim": ExecutionParameter(type=int),
        "vector_js": ExecutionParameter(type=float),
        # rows read of each side: training's first (files side by side), the log's newest
        "max_rows": ExecutionParameter(type=int),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class SkewCheck(base_component.BaseComponent):
    """Records how the recall service's logged user vectors differ from training's."""

    SPEC_CLASS = SkewCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        serving_log: str,
        user_dim: int,
        vector_js: float,
        max_rows: int,
    ):
        serving_log = os.path.abspath(serving_log)
        files = [str(p) for p in log_files(serving_log)]
        super().__init__(
            spec=SkewCheckSpec(
                examples=examples,
                serving_log=serving_log,
                log_fingerprint=input_fingerprint(*files) or serving_log,
                user_dim=user_dim,
                vector_js=vector_js,
                max_rows=max_rows,
                statistics=types.Channel(type=standard_artifacts.ExampleStatistics),
                anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
            )
        )


def skew_check_for(config: Any, examples: types.BaseChannel) -> SkewCheck:
    """SkewCheck as `create_pipeline` adds it when `config.serving_log` is set."""
    return SkewCheck(
        examples=examples,
        serving_log=config.serving_log,
        user_dim=config.user_dim,
        vector_js=config.skew_vector_js,
        max_rows=config.skew_max_rows,
    )
