"""TF Serving warm-up records for a pushed tower, so a version never serves its first requests
cold.

TF Serving replays `<version>/assets.extra/tf_serving_warmup_requests` while it loads a
version, before the version becomes AVAILABLE: a TFRecord file whose records are serialized
`tensorflow.serving.PredictionLog`s, each holding one request (here a `PredictLog` with a
PredictRequest on `serving_default`); at most 1000 records are read. Source: "SavedModel
Warmup", https://www.tensorflow.org/tfx/serving/saved_model_warmup, and
tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc (kMaxNumRecords,
the PredictionLog::LogTypeCase switch). The stand-in (`serving.model_server`) does not replay
them; `components.serving_config.validate` replays them against it instead.

The request is built from the tower's own signature (read from `saved_model.pb`, no graph
loaded): every input gets a deterministic batch of `WARMUP_BATCH` rows, unknown dimensions 1.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from components.common.errors import ArtifactError

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SIGNATURE = "serving_default"
WARMUP_BATCH = 2
_NUMERIC = {tf.float16, tf.float32, tf.float64, tf.int32, tf.int64}


def signature_inputs(saved_model_dir: str) -> dict[str, tuple[tf.DType, list[int]]]:
    """{input name: (dtype, shape with -1 for unknown)} of the `serving_default` signature."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    model = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            model.ParseFromString(f.read())
    except Exception as error:  # a DecodeError or an unreadable file: say which file
        raise ArtifactError(f"{path}: not a SavedModel ({error})") from None
    for graph in model.meta_graphs:
        if SIGNATURE in graph.signature_def:
            inputs = graph.signature_def[SIGNATURE].inputs
            return {
                name: (tf.as_dtype(info.dtype), [d.size for d in info.tensor_shape.dim])
                for name, info in inputs.items()
            }
    raise ArtifactError(f"{path}: no {SIGNATURE!r} signature to warm up")


def warmup_request(model_name: str, inputs: dict) -> predict_pb2.PredictRequest:
    """One PredictRequest on `serving_default` with deterministic values for every input."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    for name, (dtype, shape) in sorted(inputs.items()):
        if dtype not in _NUMERIC:
            raise ArtifactError(f"{model_name} input {name!r}: no warm-up value for {dtype.name}")
        dims = [WARMUP_BATCH] + [d if d > 0 else 1 for d in shape[1:]] if shape else []
        size = int(np.prod(dims)) if dims else 1
        # small, varied values: a warm-up that exercises the same kernels as real vectors
        values = (np.arange(size, dtype=np.float64) % 7 / 7.0 - 0.4).reshape(dims)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values.astype(dtype.as_numpy_dtype)))
    return request


def write_warmup(saved_model_dir: str, model_name: str, source_dir: str | None = None) -> str:
    """Write the warm-up file into `saved_model_dir` (a local staging folder) from the
    signature of `source_dir` (default: the same folder; errors name it); its path."""
    request = warmup_request(model_name, signature_inputs(source_dir or saved_model_dir))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())
    return path


def read_warmup(version_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of a version's warm-up file ([] when it has none)."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        return []
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
