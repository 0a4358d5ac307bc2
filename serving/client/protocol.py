"""TF Serving's protocol (the `tensorflow-serving-api` generated modules) without TensorFlow.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2` and the like: plain
generated modules whose packages have empty `__init__.py` files, but importing them the usual
way first runs `tensorflow/__init__.py`, which loads the whole runtime (~870 MB, ~5 s) that a
gRPC client never uses. `_protocol_modules()` imports them under a placeholder `tensorflow`
package that only points Python at TensorFlow's folder, then removes the placeholder: the
generated modules stay in `sys.modules` under their real names, so a later `import tensorflow`
runs TensorFlow's own init and finds the very same message classes (one descriptor pool).
Where TensorFlow is already imported, nothing special happens.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

import numpy as np

_MODULES = (
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.framework.types_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
)
_lock = threading.Lock()


def _protocol_modules() -> dict[str, types.ModuleType]:
    """Short name -> module for `_MODULES`, without running TensorFlow's package init."""
    with _lock:
        if "tensorflow" in sys.modules:  # the real one (or ours, never left behind)
            return {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in _MODULES}
        spec = importlib.util.find_spec("tensorflow")  # finds the folder, runs nothing
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the tensorflow package (its generated protos) is not installed")
        placeholder = types.ModuleType("tensorflow")
        placeholder.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = placeholder
        try:
            return {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in _MODULES}
        finally:
            if sys.modules.get("tensorflow") is placeholder:
                del sys.modules["tensorflow"]


_pb = _protocol_modules()
tensor_pb2 = _pb["tensor_pb2"]
types_pb2 = _pb["types_pb2"]
get_model_metadata_pb2 = _pb["get_model_metadata_pb2"]
get_model_status_pb2 = _pb["get_model_status_pb2"]
model_pb2 = _pb["model_pb2"]
model_service_pb2_grpc = _pb["model_service_pb2_grpc"]
predict_pb2 = _pb["predict_pb2"]
prediction_service_pb2_grpc = _pb["prediction_service_pb2_grpc"]

DEFAULT_SIGNATURE = "serving_default"


def float_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A DT_FLOAT TensorProto of `array` (raw little-endian bytes, as TF writes them)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=array.tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def float_array(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """The float32 array of a DT_FLOAT TensorProto (tensor_content or float_val)."""
    from serving.client.errors import ServingRequestError, TowerMismatchError

    if proto.dtype != types_pb2.DT_FLOAT:
        raise TowerMismatchError(
            f"output '{name}' is {types_pb2.DataType.Name(proto.dtype)}, expected DT_FLOAT"
        )
    shape = [d.size for d in proto.tensor_shape.dim]
    size = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype="<f4").astype(np.float32)
    else:
        flat = np.asarray(proto.float_val, dtype=np.float32)
        if 0 < flat.size < size:  # TF's compressed form: the last value repeats
            flat = np.concatenate([flat, np.full(size - flat.size, flat[-1], np.float32)])
    if flat.size != size:
        raise ServingRequestError(f"output '{name}' has {flat.size} values for shape {shape}")
    return flat.reshape(shape)


def model_spec(
    name: str, signature_name: str, version: int | None, version_label: str | None
) -> model_pb2.ModelSpec:
    """The ModelSpec naming a version, a label, or neither (the latest)."""
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version_label, not both")
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label
    return spec


def describe(spec: model_pb2.ModelSpec) -> str:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return f"{spec.name} version {spec.version.value}"
    if choice == "version_label":
        return f"{spec.name} label '{spec.version_label}'"
    return f"{spec.name} (latest)"
