"""Infra validation for two towers (TFX's InfraValidator idea): before models.config names a
version, a model server loads exactly that version of both towers and answers each tower's
warm-up requests (or one built from its signature) with finite outputs.

The model server is the real `tensorflow_model_server` when it is on PATH, else the stand-in
(`python -m serving.model_server`), as a subprocess on free 127.0.0.1 ports, given a
models.config of its own in a temporary folder: the served config is not touched.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components.common.errors import ArtifactError
from components.pusher import serving_layout, warmup
from components.pusher.serving_layout import TOWERS
from serving.model_server.process import ModelServerProcess, real_binary

_STATE = get_model_status_pb2.ModelVersionStatus.State


class InfraValidationError(ArtifactError):
    """A version failed to load or to answer: it must not be named in models.config."""


class _OneVersionServer(ModelServerProcess):
    """Ready once `version` of every tower is AVAILABLE; fails at once when a load ends."""

    version = 0

    def wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            waiting = list(TOWERS)
            while waiting:
                if not self.running:  # both servers exit when a model's first load fails
                    lines = self._log_tail().strip().splitlines() or ["(no log)"]
                    raise InfraValidationError(
                        f"version {self.version} failed to load: the model server exited "
                        f"({lines[-1]})"
                    )
                if time.monotonic() > deadline:
                    raise InfraValidationError(
                        f"{waiting[0]} version {self.version} not AVAILABLE within {timeout_s} s:"
                        f"\n{self._log_tail()}"
                    )
                state, message = _status(stub, waiting[0], self.version)
                if state == _STATE.AVAILABLE:
                    waiting.pop(0)
                    continue
                if state == _STATE.END:
                    raise InfraValidationError(
                        f"{waiting[0]} version {self.version} failed to load: {message}"
                    )
                time.sleep(0.2)  # a poll interval, bounded by the deadline above


def _status(stub, name: str, version: int) -> tuple[int | None, str]:
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name=name, version={"value": version})
    )
    try:
        response = stub.GetModelStatus(request, timeout=1.0)
    except grpc.RpcError:
        return None, ""  # not listening yet, or the version is not known yet
    for status in response.model_version_status:
        if status.version == version:
            return status.state, status.status.error_message
    return None, ""


def requests_for(serving_dir: str, tower: str, version: int) -> list[predict_pb2.PredictRequest]:
    """The tower's warm-up requests (asking for `version`), or one built from its signature."""
    folder = serving_layout.tower_uri(serving_dir, tower, version)
    logs = warmup.read_warmup(folder)
    requests = [log.predict_log.request for log in logs if log.HasField("predict_log")]
    if not requests:
        requests = [warmup.warmup_request(tower, warmup.signature_inputs(folder))]
    for request in requests:
        request.model_spec.name = tower
        request.model_spec.version.value = version
    return requests


def check_answer(tower: str, version: int, response: predict_pb2.PredictResponse) -> None:
    """Every output present and finite, answered by `version`."""
    if response.model_spec.version.value not in (0, version):
        raise InfraValidationError(
            f"{tower}: asked for version {version}, answered by {response.model_spec.version.value}"
        )
    if not response.outputs:
        raise InfraValidationError(f"{tower} version {version} answered without outputs")
    for name, proto in response.outputs.items():
        values = tf.make_ndarray(proto)
        if values.size == 0 or (values.dtype.kind == "f" and not np.isfinite(values).all()):
            raise InfraValidationError(
                f"{tower} version {version}: output {name!r} is empty or not finite"
            )


def validate_version(serving_dir: str, version: int, timeout_s: float = 120.0) -> dict:
    """Load `version` of both towers in a fresh model server and query each; a report, or
    InfraValidationError saying what failed."""
    binary = real_binary()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="finetower-infra-") as tmp:
        config = Path(tmp) / serving_layout.MODELS_CONFIG
        only = serving_layout.models_config(serving_dir, specific=[version])
        config.write_text(text_format.MessageToString(only))
        server = _OneVersionServer(config, binary=binary, ready_timeout_s=timeout_s)
        server.version = version
        try:
            server.start()
            answered = _query_all(server.grpc_target, serving_dir, version)
        except grpc.RpcError as error:
            raise InfraValidationError(
                f"version {version} did not answer: {error.code().name} {error.details()}"
            ) from None
        finally:
            server.stop()
    report = {
        "version": version,
        "model_server": binary or "serving.model_server (stand-in)",
        "requests": answered,
        "seconds": round(time.monotonic() - started, 2),
    }
    logging.info("infra validation passed: %s", report)
    return report


def _query_all(target: str, serving_dir: str, version: int) -> dict[str, int]:
    answered = {}
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for tower in TOWERS:
            requests = requests_for(serving_dir, tower, version)
            for request in requests:
                check_answer(tower, version, stub.Predict(request, timeout=30.0))
            answered[tower] = len(requests)
    return answered
