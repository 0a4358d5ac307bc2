"""TF Serving's REST API over a ModelRegistry, on the standard library's threaded HTTP server:

    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature defs
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict    {"instances": [...]} (row)
                                                                 or {"inputs": ...} (columnar)
Errors answer {"error": "..."} with the HTTP status of their gRPC code.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

from serving.model_server.errors import ServingError
from serving.model_server.grpc_service import MAX_MESSAGE_BYTES, metadata_response
from serving.model_server.registry import ModelRegistry
from serving.model_server.servable import DEFAULT_SIGNATURE

MAX_BODY_BYTES = MAX_MESSAGE_BYTES
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:predict|:classify|:regress|/metadata)?$"
)
_STATE_NAMES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


def _spec(match: re.Match) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=match["name"])
    if match["version"] is not None:
        spec.version.value = int(match["version"])
    elif match["label"] is not None:
        spec.version_label = match["label"]
    return spec


def _decode_b64(value):
    """JSON values of a string input: {"b64": "..."} objects become bytes."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value.encode() if isinstance(value, str) else value


def _to_array(alias: str, value, spec: tf.TensorSpec) -> np.ndarray:
    try:
        if spec.dtype == tf.string:
            return np.asarray(_decode_b64(value), dtype=object)
        return np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as err:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{alias}' cannot be read as {spec.dtype.name}: {err}",
        ) from err


def _to_json(array: np.ndarray):
    if array.dtype == object or array.dtype.kind == "S":

        def text(b):
            try:
                return b.decode()
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode()}

        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def predict_json(registry: ModelRegistry, spec: model_pb2.ModelSpec, body: dict) -> dict:
    """The REST predict answer for a parsed request body."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            'the request body needs exactly one of "instances" (row) or "inputs" (columnar)',
        )
    servable = registry.resolve(spec)
    signature_name = body.get("signature_name") or DEFAULT_SIGNATURE
    specs = servable.input_specs(signature_name)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, '"instances" must be a list')
        named = bool(instances) and all(isinstance(i, dict) for i in instances)
        if named:
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, "every instance needs the same inputs"
                )
            raw = {k: [i[k] for i in instances] for k in keys}
        elif len(specs) == 1:
            raw = {next(iter(specs)): instances}
        else:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the signature has inputs {sorted(specs)}: name them in each instance",
            )
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            raw = inputs
        elif len(specs) == 1:
            raw = {next(iter(specs)): inputs}
        else:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'the signature has inputs {sorted(specs)}: pass "inputs" as an object',
            )
    arrays = {
        alias: _to_array(alias, value, specs[alias]) if alias in specs else np.asarray(value)
        for alias, value in raw.items()
    }
    outputs = servable.predict(signature_name, arrays, None)
    if "instances" in body:
        if len(outputs) == 1:
            return {"predictions": _to_json(next(iter(outputs.values())))}
        columns = {k: _to_json(v) for k, v in outputs.items()}
        rows = len(next(iter(columns.values())))
        return {"predictions": [{k: c[i] for k, c in columns.items()} for i in range(rows)]}
    if len(outputs) == 1:
        return {"outputs": _to_json(next(iter(outputs.values())))}
    return {"outputs": {k: _to_json(v) for k, v in outputs.items()}}


def status_json(registry: ModelRegistry, spec: model_pb2.ModelSpec) -> dict:
    statuses = registry.status(spec)
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": _STATE_NAMES.get(s.state, "UNKNOWN"),
                "status": {
                    "error_code": "OK" if not s.status.error_message else "INTERNAL",
                    "error_message": s.status.error_message,
                },
            }
            for s in statuses
        ]
    }


def metadata_json(registry: ModelRegistry, spec: model_pb2.ModelSpec) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.CopyFrom(spec)
    response = metadata_response(registry, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {
        "model_spec": {
            "name": response.model_spec.name,
            "signature_name": "",
            "version": str(response.model_spec.version.value),
        },
        "metadata": {
            "signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)
        },
    }


def _handler(registry: ModelRegistry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 (the base class' name)
            pass  # quiet, as TF Serving's REST server is

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _content_length(self) -> int:
            """The declared body size; a missing, malformed or negative one is 400 (and the
            connection closes: the body's end is unknown). TF Serving answers every REST
            error as JSON `{"error": <message>}` (its REST API docs, "Error" section)."""
            declared = self.headers.get("Content-Length")
            if declared is None or not declared.strip().isdigit():
                self.close_connection = True
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Content-Length must be a non-negative integer, got {declared!r}",
                )
            if int(declared) > MAX_BODY_BYTES:
                self.close_connection = True
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a body of {int(declared)} bytes is over the {MAX_BODY_BYTES} bytes accepted",
                )
            return int(declared)

        def _route(self, method: str) -> None:
            match = _PATH.match(self.path.split("?", 1)[0])
            try:
                if match is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"no such path: {self.path}")
                action = match["action"]
                if method == "GET" and action is None:
                    answer = status_json(registry, _spec(match))
                elif method == "GET" and action == "/metadata":
                    answer = metadata_json(registry, _spec(match))
                elif method == "POST" and action == ":predict":
                    length = self._content_length()
                    try:
                        body = json.loads(self.rfile.read(length) or b"null")
                    except json.JSONDecodeError as err:
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT, f"the body is not JSON: {err}"
                        ) from err
                    answer = predict_json(registry, _spec(match), body)
                elif method == "POST" and action in (":classify", ":regress"):
                    raise ServingError(
                        grpc.StatusCode.UNIMPLEMENTED, f"{action[1:]} is not served here"
                    )
                else:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"{method} {self.path} is not supported"
                    )
            except ServingError as err:
                self._answer(err.http_status, {"error": err.message})
                return
            self._answer(HTTPStatus.OK, answer)

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

    return Handler


def rest_server(registry: ModelRegistry, host: str, port: int) -> tuple[ThreadingHTTPServer, int]:
    """A started REST server (a daemon thread) and its port (0 picks one)."""
    server = ThreadingHTTPServer((host, port), _handler(registry))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rest", daemon=True).start()
    return server, server.server_address[1]
