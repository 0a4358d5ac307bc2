"""TF Serving's gRPC surface over a ModelRegistry: PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus, HandleReloadConfigRequest)."""

from __future__ import annotations

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server.errors import ServingError
from serving.model_server.registry import ModelRegistry
from serving.model_server.servable import DEFAULT_SIGNATURE, Servable

SIGNATURE_DEF_FIELD = "signature_def"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _answer_spec(spec, servable: Servable, signature_name: str | None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_name


def metadata_response(
    registry: ModelRegistry, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if not fields:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadata needs metadata_field"
        )
    unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
    if unsupported:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Metadata field(s) {unsupported} not supported (only '{SIGNATURE_DEF_FIELD}')",
        )
    servable = registry.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _answer_spec(response.model_spec, servable, None)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signatures.signature_def[name].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
    return response


def predict_response(
    registry: ModelRegistry, request: predict_pb2.PredictRequest
) -> predict_pb2.PredictResponse:
    servable = registry.resolve(request.model_spec)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    inputs = {}
    for alias, proto in request.inputs.items():
        try:
            inputs[alias] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"input '{alias}' is not a valid tensor: {err}"
            ) from err
    outputs = servable.predict(signature_name, inputs, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    _answer_spec(response.model_spec, servable, signature_name)
    for alias, array in outputs.items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress, MultiInference stay UNIMPLEMENTED."""

    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    def Predict(self, request, context):  # noqa: N802 (gRPC's method names)
        try:
            return predict_response(self._registry, request)
        except ServingError as err:
            context.abort(err.code, err.message)

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            return metadata_response(self._registry, request)
        except ServingError as err:
            context.abort(err.code, err.message)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest only when `allow_reload_config`: whoever
    reaches the port could otherwise unload the towers (a bogus base_path), and gRPC here has
    no authentication."""

    def __init__(self, registry: ModelRegistry, allow_reload_config: bool = False):
        self._registry = registry
        self._allow_reload_config = allow_reload_config

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            statuses = self._registry.status(request.model_spec)
        except ServingError as err:
            context.abort(err.code, err.message)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        if not self._allow_reload_config:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "model management is off: start the server with --allow_reload_config",
            )
        if request.config.WhichOneof("config") != "model_config_list":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "needs a model_config_list")
        self._registry.apply_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def grpc_server(
    registry: ModelRegistry, address: str, threads: int = 16, *, allow_reload_config: bool = False
) -> tuple[grpc.Server, int]:
    """A started gRPC server on `address` ("host:port"; port 0 picks one) and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(registry, allow_reload_config), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    server.start()
    return server, port
