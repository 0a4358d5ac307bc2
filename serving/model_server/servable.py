"""One loaded version of one model: its SavedModel's signatures, called the way TF Serving
calls them (inputs and outputs by their SignatureDef aliases)."""

from __future__ import annotations

import os

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.model_server.errors import ServingError

DEFAULT_SIGNATURE = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_complete(version_dir: str) -> bool:
    """A version folder is complete once its saved_model.pb(txt) exists (written last, or the
    whole folder renamed into place)."""
    return any(tf.io.gfile.exists(os.path.join(version_dir, f)) for f in SAVED_MODEL_FILES)


def read_signature_defs(version_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the SavedModel's serving MetaGraph, as GetModelMetadata returns them."""
    saved_model = saved_model_pb2.SavedModel()
    binary = os.path.join(version_dir, SAVED_MODEL_FILES[0])
    if tf.io.gfile.exists(binary):
        with tf.io.gfile.GFile(binary, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        from google.protobuf import text_format

        with tf.io.gfile.GFile(os.path.join(version_dir, SAVED_MODEL_FILES[1])) as f:
            text_format.Parse(f.read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{version_dir}: no MetaGraph tagged 'serve'")


class Servable:
    """A SavedModel version loaded in this process; `predict` is thread-safe."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)

    def _function(self, signature_name: str):
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self._functions:
            # FAILED_PRECONDITION, as TF Serving's RunPredict
            # (tensorflow_serving/servables/tensorflow/predict_util.cc): "Serving signature
            # key "<name>" not found."
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{name}" not found. ({self.name} version '
                f"{self.version} has: {', '.join(sorted(self._functions))})",
            )
        return self._functions[name]

    def input_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        """The signature's inputs by alias."""
        return dict(self._function(signature_name).structured_input_signature[1])

    def output_names(self, signature_name: str) -> list[str]:
        return sorted(self._function(signature_name).structured_outputs)

    def predict(
        self,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the signature on `inputs` (alias -> array); the outputs named in `output_filter`
        (all when empty). Bad input names, dtypes or shapes raise INVALID_ARGUMENT naming it."""
        function = self._function(signature_name)
        specs = dict(function.structured_input_signature[1])
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"inputs of {self.name} version {self.version}: expected "
                f"{sorted(specs)}, missing {missing}, unexpected {extra}",
            )
        tensors = {}
        for alias, spec in specs.items():
            array = np.asarray(inputs[alias])
            if array.dtype != spec.dtype.as_numpy_dtype and not (
                spec.dtype == tf.string and array.dtype.kind in "OSU"
            ):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{alias}' is {array.dtype}, the signature expects {spec.dtype.name}",
                )
            if not spec.shape.is_compatible_with(array.shape):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{alias}' has shape {list(array.shape)}, the signature expects "
                    f"{spec.shape.as_list()} (None: any size)",
                )
            tensors[alias] = tf.convert_to_tensor(array, dtype=spec.dtype)
        wanted = list(output_filter or [])
        # duplicates are INVALID_ARGUMENT in TF Serving's PreProcessPrediction (predict_util.cc:
        # "duplicate output tensor alias: <alias>"), not silently merged
        duplicates = sorted({alias for alias in wanted if wanted.count(alias) > 1})
        if duplicates:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"duplicate output tensor alias: {', '.join(duplicates)}",
            )
        unknown = sorted(set(wanted) - set(function.structured_outputs))
        if unknown:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output_filter names {unknown}, not outputs of {self.name} "
                f"(has: {sorted(function.structured_outputs)})",
            )
        try:
            outputs = function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError) as err:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
        except tf.errors.OpError as err:
            raise ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}") from err
        names = wanted or list(outputs)
        return {name: outputs[name].numpy() for name in names}
