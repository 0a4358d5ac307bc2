"""Clients of the towers served by TF Serving (or `python -m serving.model_server`) over gRPC.

    client = UserTowerClient("localhost:8500")            # or version=3 / version_label="stable"
    out = client.embed(user_vectors)                       # float32 [batch, 128]
    out.query, out.user_embedding                          # [batch, 64] each
    out.served_version, out.bias                           # int, [batch, 1]

sigmoid(query · item_embedding + bias) is the model's probability. On first use a client checks
the served signature once (GetModelMetadata) and raises TowerMismatchError when the model is
missing or is not the tower it expects. Every call has a deadline (`timeout_s`, retries
included); UNAVAILABLE is retried with exponential backoff, at most `retries` times.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DEFAULT_SIGNATURE = "serving_default"
USER_TOWER_OUTPUTS = ("query", "user_embedding", "bias")
ITEM_TOWER_OUTPUTS = ("item_embedding",)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # reconnect soon after a server restart (gRPC's default backoff grows to 120 s); the
    # connect timeout (grpc.min_reconnect_backoff_ms, 20 s) stays: slow links need it
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class ServingClientError(RuntimeError):
    """Any failure of a tower client; `code` is the gRPC status code when there is one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


class TowerMismatchError(ServingClientError):
    """The server does not serve the tower the client expects: model or version not found,
    signature, input or output missing, or sizes that differ."""


class ServingUnavailableError(ServingClientError):
    """No answer within the deadline: the server is down, unreachable or too slow."""


class ServingRequestError(ServingClientError):
    """The server rejected the request (INVALID_ARGUMENT and the like)."""


class UserTowerOutput(NamedTuple):
    query: np.ndarray  # float32 [batch, d]: user_embedding ⊙ w (output weights folded in)
    user_embedding: np.ndarray  # float32 [batch, d]
    served_version: int  # the user-tower version that answered
    bias: np.ndarray  # float32 [batch, 1]: the output layer's b


class ItemTowerOutput(NamedTuple):
    item_embedding: np.ndarray  # float32 [batch, d]
    served_version: int


def float_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A DT_FLOAT TensorProto of `array` (raw little-endian bytes, as TF writes them)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=array.tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def float_array(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """The float32 array of a DT_FLOAT TensorProto (tensor_content or float_val)."""
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


def _model_spec(
    name: str, signature_name: str, version: int | None, version_label: str | None
) -> model_pb2.ModelSpec:
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version_label, not both")
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label
    return spec


def _describe(spec: model_pb2.ModelSpec) -> str:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return f"{spec.name} version {spec.version.value}"
    if choice == "version_label":
        return f"{spec.name} label '{spec.version_label}'"
    return f"{spec.name} (latest)"


class TowerClient:
    """A served model whose signature takes one float32 [batch, input_dim] input and returns
    float32 [batch, *] outputs; the towers' clients below name theirs."""

    def __init__(
        self,
        target: str,
        model_name: str,
        *,
        input_name: str,
        input_dim: int,
        outputs: tuple[str, ...],
        output_dims: dict[str, int] | None = None,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
    ):
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        _model_spec(model_name, signature_name, version, version_label)  # both given: raises
        self.target = target
        self.model_name = model_name
        self.input_name = input_name
        self.input_dim = input_dim
        self.outputs = tuple(outputs)
        self.output_dims = dict(output_dims or {})
        self.version = version
        self.version_label = version_label
        self.signature_name = signature_name
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._checked: dict[str, int] | None = None
        self._check_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------
    def _spec(self, version: int | None, version_label: str | None) -> model_pb2.ModelSpec:
        if version is None and version_label is None:
            version, version_label = self.version, self.version_label
        return _model_spec(self.model_name, self.signature_name, version, version_label)

    def _call(self, method, request, what: str):
        """`method(request)` within `timeout_s` in all, UNAVAILABLE retried with backoff."""
        deadline = time.monotonic() + self.timeout_s
        delay = self.backoff_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise ServingUnavailableError(
                        f"{what} on {self.target}: no answer within {self.timeout_s} s "
                        f"({attempt} retries)",
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    )
                return method(request, timeout=remaining)
            except grpc.RpcError as err:
                code, details = err.code(), err.details()
            unavailable = code == grpc.StatusCode.UNAVAILABLE
            pause = min(delay, self.max_backoff_s, deadline - time.monotonic())
            if unavailable and attempt < self.retries and pause > 0:
                time.sleep(pause)  # backoff between attempts, inside the deadline
                attempt += 1
                delay *= 2
                continue
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServingUnavailableError(
                    f"{what} on {self.target}: {code.name} after {attempt} retries within "
                    f"{self.timeout_s} s: {details}",
                    code,
                )
            if code == grpc.StatusCode.NOT_FOUND:
                raise TowerMismatchError(f"{what} on {self.target}: not found: {details}", code)
            raise ServingRequestError(f"{what} on {self.target}: {code.name}: {details}", code)

    def check_signature(self) -> dict[str, int]:
        """Check once, with GetModelMetadata, that the served signature is the one this client
        expects; return the output sizes. Raises TowerMismatchError naming what differs."""
        with self._check_lock:
            if self._checked is not None:
                return self._checked
            spec = self._spec(None, None)
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=["signature_def"]
            )
            response = self._call(
                self._predictions.GetModelMetadata, request, f"metadata of {_describe(spec)}"
            )
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signatures)
            self._checked = self._check(signatures, _describe(spec), response.model_spec)
            return self._checked

    def _check(self, signatures, what: str, served_spec) -> dict[str, int]:
        where = f"{what} on {self.target} (served version {served_spec.version.value})"
        if self.signature_name not in signatures.signature_def:
            raise TowerMismatchError(
                f"{where} has no signature '{self.signature_name}' "
                f"(has: {sorted(signatures.signature_def)})"
            )
        signature = signatures.signature_def[self.signature_name]
        if set(signature.inputs) != {self.input_name}:
            raise TowerMismatchError(
                f"{where}: signature '{self.signature_name}' takes {sorted(signature.inputs)}, "
                f"expected one input '{self.input_name}'"
            )
        expected = {self.input_name: self.input_dim}
        for kind, tensors, names in (
            ("input", signature.inputs, [self.input_name]),
            ("output", signature.outputs, list(self.outputs)),
        ):
            for name in names:
                if name not in tensors:
                    raise TowerMismatchError(
                        f"{where}: {kind} '{name}' missing (has: {sorted(tensors)})"
                    )
                info = tensors[name]
                if info.dtype != types_pb2.DT_FLOAT:
                    raise TowerMismatchError(
                        f"{where}: {kind} '{name}' is {types_pb2.DataType.Name(info.dtype)}, "
                        "expected DT_FLOAT"
                    )
                dims = [d.size for d in info.tensor_shape.dim]
                if info.tensor_shape.unknown_rank or len(dims) != 2:
                    raise TowerMismatchError(
                        f"{where}: {kind} '{name}' has shape {dims}, expected [batch, size]"
                    )
                want = expected.get(name) if kind == "input" else self.output_dims.get(name)
                if want is not None and dims[1] != want:
                    raise TowerMismatchError(
                        f"{where}: {kind} '{name}' has size {dims[1]}, this client expects {want}"
                    )
        return {name: signature.outputs[name].tensor_shape.dim[1].size for name in self.outputs}

    def predict(
        self, vectors, version: int | None = None, *, version_label: str | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        """The outputs (name -> float32 [batch, size]) for `vectors` [batch, input_dim] and the
        version that answered; `version`/`version_label` override the client's for this call."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.input_dim:
            raise ValueError(
                f"{self.input_name} must be [batch, {self.input_dim}], got {list(array.shape)}"
            )
        sizes = self.check_signature()
        spec = self._spec(version, version_label)
        request = predict_pb2.PredictRequest(model_spec=spec, output_filter=list(self.outputs))
        request.inputs[self.input_name].CopyFrom(float_tensor(array))
        response = self._call(self._predictions.Predict, request, f"predict {_describe(spec)}")
        outputs = {}
        for name in self.outputs:
            if name not in response.outputs:
                raise TowerMismatchError(f"{_describe(spec)} answered without output '{name}'")
            value = float_array(response.outputs[name], name)
            if value.shape != (array.shape[0], sizes[name]) and sizes[name] > 0:
                raise TowerMismatchError(
                    f"{_describe(spec)}: output '{name}' has shape {list(value.shape)}, "
                    f"expected [{array.shape[0]}, {sizes[name]}]"
                )
            outputs[name] = value
        return outputs, int(response.model_spec.version.value)

    def model_status(self) -> dict[int, str]:
        """Version -> state name (AVAILABLE, END, ...) from GetModelStatus."""
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=self.model_name)
        )
        response = self._call(self._models.GetModelStatus, request, f"status of {self.model_name}")
        state = get_model_status_pb2.ModelVersionStatus.State
        return {s.version: state.Name(s.state) for s in response.model_version_status}

    def wait_until_available(self, timeout_s: float, version: int | None = None) -> list[int]:
        """Poll GetModelStatus until a version (or `version`) is AVAILABLE; the available
        versions. Raises ServingUnavailableError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                available = [v for v, s in self.model_status().items() if s == "AVAILABLE"]
                if available and (version is None or version in available):
                    return sorted(available)
                last = None
            except ServingClientError as err:
                last = err
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))  # a poll interval
        raise ServingUnavailableError(
            f"{self.model_name}{'' if version is None else f' version {version}'} not available "
            f"on {self.target} within {timeout_s} s" + (f": {last}" if last else "")
        )


class UserTowerClient(TowerClient):
    """The user tower: `embed(user_vectors)` -> UserTowerOutput(query, user_embedding,
    served_version, bias). `options`: signature_name, backoff_s, max_backoff_s."""

    def __init__(
        self,
        target: str,
        model_name: str = "user_tower",
        version: int | None = None,
        *,
        version_label: str | None = None,
        input_dim: int = 128,
        embedding_dim: int | None = None,
        timeout_s: float = 2.0,
        retries: int = 3,
        **options,
    ):
        dims = {"bias": 1}
        if embedding_dim is not None:
            dims.update(query=embedding_dim, user_embedding=embedding_dim)
        super().__init__(
            target,
            model_name,
            input_name="user_vector",
            input_dim=input_dim,
            outputs=USER_TOWER_OUTPUTS,
            output_dims=dims,
            version=version,
            version_label=version_label,
            timeout_s=timeout_s,
            retries=retries,
            **options,
        )

    def _check(self, signatures, what, served_spec):
        sizes = super()._check(signatures, what, served_spec)
        if sizes["query"] != sizes["user_embedding"]:
            raise TowerMismatchError(
                f"{what} on {self.target}: query has size {sizes['query']}, user_embedding "
                f"{sizes['user_embedding']}: not a folded user tower"
            )
        return sizes

    def embed(
        self, user_vectors, version: int | None = None, *, version_label: str | None = None
    ) -> UserTowerOutput:
        """Embed raw user vectors float32 [batch, input_dim]."""
        outputs, served = self.predict(user_vectors, version, version_label=version_label)
        return UserTowerOutput(outputs["query"], outputs["user_embedding"], served, outputs["bias"])


class ItemTowerClient(TowerClient):
    """The item tower: `embed(item_vectors)` -> ItemTowerOutput(item_embedding,
    served_version). `options`: signature_name, backoff_s, max_backoff_s."""

    def __init__(
        self,
        target: str,
        model_name: str = "item_tower",
        version: int | None = None,
        *,
        version_label: str | None = None,
        input_dim: int = 128,
        embedding_dim: int | None = None,
        timeout_s: float = 2.0,
        retries: int = 3,
        **options,
    ):
        super().__init__(
            target,
            model_name,
            input_name="item_vector",
            input_dim=input_dim,
            outputs=ITEM_TOWER_OUTPUTS,
            output_dims={} if embedding_dim is None else {"item_embedding": embedding_dim},
            version=version,
            version_label=version_label,
            timeout_s=timeout_s,
            retries=retries,
            **options,
        )

    def embed(
        self, item_vectors, version: int | None = None, *, version_label: str | None = None
    ) -> ItemTowerOutput:
        """Embed raw item vectors float32 [batch, input_dim]."""
        outputs, served = self.predict(item_vectors, version, version_label=version_label)
        return ItemTowerOutput(outputs["item_embedding"], served)
