"""A served model whose signature takes one float32 [batch, input_dim] input: the calls
(deadline, retries), the signature check, predict and status."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from serving.client.errors import (
    ServingClientError,
    ServingRequestError,
    ServingUnavailableError,
    TowerMismatchError,
)
from serving.client.protocol import (
    DEFAULT_SIGNATURE,
    describe,
    float_array,
    float_tensor,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    model_spec,
    predict_pb2,
    prediction_service_pb2_grpc,
    types_pb2,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # reconnect soon after a server restart (gRPC's default backoff grows to 120 s); the
    # connect timeout (grpc.min_reconnect_backoff_ms, 20 s) stays: slow links need it
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


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
        model_spec(model_name, signature_name, version, version_label)  # both given: raises
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
        return model_spec(self.model_name, self.signature_name, version, version_label)

    def _call(self, method, request, what: str, deadline: float | None = None):
        """`method(request)` before `deadline` (time.monotonic()), else within `timeout_s`
        in all; UNAVAILABLE retried with backoff inside that time."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        delay = self.backoff_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise ServingUnavailableError(
                        f"{what} on {self.target}: no answer before the deadline "
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
                    f"{what} on {self.target}: {code.name} after {attempt} retries before "
                    f"the deadline: {details}",
                    code,
                )
            if code == grpc.StatusCode.NOT_FOUND:
                raise TowerMismatchError(f"{what} on {self.target}: not found: {details}", code)
            raise ServingRequestError(f"{what} on {self.target}: {code.name}: {details}", code)

    def check_signature(self, deadline: float | None = None) -> dict[str, int]:
        """Check once, with GetModelMetadata, that the served signature is the one this client
        expects; return the output sizes. Raises TowerMismatchError naming what differs."""
        if self._checked is not None:
            return self._checked
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        # a bounded wait: while one caller checks against a stalled server, the others keep
        # their own deadlines instead of queueing behind it
        if not self._check_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ServingUnavailableError(
                f"{self.model_name} on {self.target}: signature check still running at the "
                "deadline",
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        try:
            if self._checked is not None:
                return self._checked
            spec = self._spec(None, None)
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=["signature_def"]
            )
            response = self._call(
                self._predictions.GetModelMetadata,
                request,
                f"metadata of {describe(spec)}",
                deadline,
            )
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signatures)
            self._checked = self._check(signatures, describe(spec), response.model_spec)
            return self._checked
        finally:
            self._check_lock.release()

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
        self,
        vectors,
        version: int | None = None,
        *,
        version_label: str | None = None,
        deadline: float | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """The outputs (name -> float32 [batch, size]) for `vectors` [batch, input_dim] and the
        version that answered; `version`/`version_label` override the client's for this call;
        `deadline` (time.monotonic()) replaces `timeout_s` for a caller with its own budget."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.input_dim:
            raise ValueError(
                f"{self.input_name} must be [batch, {self.input_dim}], got {list(array.shape)}"
            )
        sizes = self.check_signature(deadline)
        spec = self._spec(version, version_label)
        request = predict_pb2.PredictRequest(model_spec=spec, output_filter=list(self.outputs))
        request.inputs[self.input_name].CopyFrom(float_tensor(array))
        what = f"predict {describe(spec)}"
        response = self._call(self._predictions.Predict, request, what, deadline)
        outputs = {}
        for name in self.outputs:
            if name not in response.outputs:
                raise TowerMismatchError(f"{describe(spec)} answered without output '{name}'")
            value = float_array(response.outputs[name], name)
            if value.shape != (array.shape[0], sizes[name]) and sizes[name] > 0:
                raise TowerMismatchError(
                    f"{describe(spec)}: output '{name}' has shape {list(value.shape)}, "
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
