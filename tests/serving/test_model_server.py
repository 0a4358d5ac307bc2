"""The local model server (`python -m serving.model_server`) as a real subprocess over a copy
of a pushed run's serving dir: TF Serving's gRPC and REST answers, status codes, version
policies, labels, and versions pushed or config edits made while it runs."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from components.pusher.serving_layout import models_config, publish_version
from serving.model_server import aspired_versions, read_model_server_config
from serving.model_server.process import ModelServerProcess, wait_until

PUSHES = "user_tower_pushes"  # a user tower the version tests push into
PINNED = "user_tower_pinned"  # the same base path under `specific { versions: 1 }`
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.State.END


def _config(root: Path, labels: dict[str, int] | None = None):
    config = models_config(str(root))
    config.model_config_list.config[0].version_labels["stable"] = 1
    pushes = config.model_config_list.config.add(
        name=PUSHES, base_path=str(root / PUSHES), model_platform="tensorflow"
    )
    pushes.model_version_policy.latest.num_versions = 2
    for label, version in (labels or {}).items():
        pushes.version_labels[label] = version
    pinned = config.model_config_list.config.add(
        name=PINNED, base_path=str(root / PUSHES), model_platform="tensorflow"
    )
    pinned.model_version_policy.specific.versions.append(1)
    return config


def _write_config(root: Path, config) -> Path:
    path = root / "models.config"
    tmp = root / ".models.config.tmp"
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)  # a whole file or none, as the pusher writes it
    return path


@pytest.fixture(scope="module")
def serving_root(pushed_run, tmp_path_factory) -> Path:
    """A copy of the pushed serving dir (the session's stays untouched), plus a second user
    tower to push versions into."""
    root = tmp_path_factory.mktemp("model_server") / "serving"
    shutil.copytree(pushed_run["serving"], root)
    shutil.copytree(root / "user_tower", root / PUSHES)
    _write_config(root, _config(root))
    return root


@pytest.fixture(scope="module")
def server(serving_root):
    with ModelServerProcess(
        serving_root / "models.config",
        extra_flags=(
            "--file_system_poll_wait_seconds=0.2",
            "--model_config_file_poll_wait_seconds=0.5",
        ),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


@pytest.fixture(scope="module")
def user_tower_in_process(pushed_run):
    loaded = tf.saved_model.load(str(pushed_run["serving"] / "user_tower" / "1"))
    return loaded, loaded.signatures["serving_default"]


@pytest.fixture(scope="module")
def user_vectors(pushed_run) -> np.ndarray:
    return np.asarray(pushed_run["data"]["users"][:64], dtype=np.float32)


def _predict_request(name: str, vectors, *, version=None, label=None, alias="user_vector"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(vectors))
    return request


def _status(stubs, name: str) -> dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
    response = stubs[1].GetModelStatus(request, timeout=5)
    return {s.version: s.state for s in response.model_version_status}


def _rest(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_predict_equals_the_saved_model_called_in_process(
    stubs, user_tower_in_process, user_vectors
):
    _, signature = user_tower_in_process
    expected = signature(user_vector=tf.constant(user_vectors))
    response = stubs[0].Predict(_predict_request("user_tower", user_vectors), timeout=10)
    assert response.model_spec.name == "user_tower"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"query", "user_embedding", "bias"}
    for name in ("query", "user_embedding", "bias"):
        got = tf.make_ndarray(response.outputs[name])
        np.testing.assert_allclose(got, expected[name].numpy(), rtol=0, atol=1e-6)
    only = _predict_request("user_tower", user_vectors[:2])
    only.output_filter.append("bias")
    assert set(stubs[0].Predict(only, timeout=10).outputs) == {"bias"}


def test_metadata_returns_the_towers_signature_defs(stubs):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "user_tower"
    response = stubs[0].GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert [d.size for d in serving.inputs["user_vector"].tensor_shape.dim] == [-1, 128]
    assert {"query", "user_embedding", "bias"} <= set(serving.outputs)
    assert [d.size for d in serving.outputs["query"].tensor_shape.dim] == [-1, 64]
    assert "from_examples" in signatures.signature_def


def test_unknown_model_or_version_is_not_found(stubs, user_vectors):
    for request in (
        _predict_request("no_such_tower", user_vectors[:1]),
        _predict_request("user_tower", user_vectors[:1], version=99),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stubs[0].Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "no_such_tower"
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].GetModelMetadata(metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_tower" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        _status(stubs, "no_such_tower")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_input_is_invalid_argument_naming_the_input(stubs, user_vectors):
    cases = {
        "item_vector": _predict_request("user_tower", user_vectors[:2], alias="item_vector"),
        "shape": _predict_request("user_tower", user_vectors[:2, :64]),
        "float64": _predict_request("user_tower", user_vectors[:2].astype(np.float64)),
    }
    for expected_words, request in cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            stubs[0].Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_vector" in caught.value.details()
        assert expected_words in caught.value.details()


# What tensorflow_model_server answers, from its source: predict_util.cc (RunPredict,
# PreProcessPrediction), model_servers/http_server.cc (ToHTTPStatusCode: FAILED_PRECONDITION and
# INVALID_ARGUMENT are HTTP 400) and the REST API docs (every error is {"error": message}).


def test_an_unknown_signature_is_failed_precondition_as_in_tf_serving(stubs, user_vectors):
    bad_signature = _predict_request("user_tower", user_vectors[:1])
    bad_signature.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(bad_signature, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert 'Serving signature key "nope" not found.' in caught.value.details()


def test_a_duplicate_output_filter_is_invalid_argument_as_in_tf_serving(stubs, user_vectors):
    request = _predict_request("user_tower", user_vectors[:1])
    request.output_filter.extend(["query", "bias", "query"])
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "duplicate output tensor alias: query" in caught.value.details()
    del request.output_filter[2]  # distinct entries still answer only what they name
    response = stubs[0].Predict(request, timeout=10)
    assert sorted(response.outputs) == ["bias", "query"]


def _raw_rest(server, head: bytes) -> tuple[int, dict, bytes]:
    """Send `head` as is; (status, JSON body, the raw answer) read until the server closes."""
    import socket

    host, port = server.rest_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        answer = b""
        while chunk := conn.recv(65536):  # a server that hangs fails on the timeout
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1]), answer


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3"])
def test_a_bad_rest_content_length_is_400_with_tf_servings_error_json(server, length):
    head = (
        b"POST /v1/models/user_tower:predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n{}"
    )
    status, body, answer = _raw_rest(server, head)
    assert status == 400 and list(body) == ["error"] and "Content-Length" in body["error"]
    assert b"connection: close" in answer.lower()


def test_reload_config_is_refused_unless_the_server_allows_it(stubs, server, serving_root):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(name="user_tower", base_path="/nonexistent")
    with pytest.raises(grpc.RpcError) as caught:
        stubs[1].HandleReloadConfigRequest(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--allow_reload_config" in caught.value.details()
    assert _status(stubs, "user_tower")[1] == AVAILABLE  # nothing was unloaded


def test_the_kubernetes_readiness_probe_passes_only_while_the_towers_are_available(server):
    """The manifest's exec probe, run by bash against the stand-in's REST port."""
    import subprocess

    import yaml

    manifest = Path(__file__).resolve().parents[2] / "serving" / "tf_serving" / "kubernetes.yaml"
    (deployment,) = [
        d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Deployment"
    ]
    command = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]
    port = server.rest_url.rsplit(":", 1)[1]
    script = command["command"][-1].replace("/8501", f"/{port}")

    def probe(text: str) -> int:
        return subprocess.run(["bash", "-c", text], timeout=30).returncode

    assert probe(script) == 0
    assert probe(script.replace("item_tower", "no_such_tower")) != 0  # 404: not ready
    assert probe(script.replace("user_tower item_tower", PINNED)) == 0


def test_the_stand_in_binds_loopback_unless_told(serving_root):
    from serving.model_server.__main__ import parse_args

    config = f"--model_config_file={serving_root / 'models.config'}"
    assert parse_args([config]).bind_address == "127.0.0.1"
    assert parse_args([config]).allow_reload_config is False
    assert parse_args([config, "--bind_address=0.0.0.0"]).bind_address == "0.0.0.0"


def test_reload_config_applies_when_allowed(pushed_run):
    """In this process: a server started with allow_reload_config applies the new config."""
    from tensorflow_serving.apis import model_management_pb2

    from serving.model_server import ModelRegistry
    from serving.model_server.grpc_service import grpc_server

    registry = ModelRegistry(models_config(str(pushed_run["serving"])))
    server, port = grpc_server(registry, "127.0.0.1:0", 2, allow_reload_config=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = model_management_pb2.ReloadConfigRequest()
            request.config.CopyFrom(models_config(str(pushed_run["serving"])))
            del request.config.model_config_list.config[1]  # item_tower
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = stub.HandleReloadConfigRequest(request, timeout=30)
        assert response.status.error_code == 0 and registry.model_names() == ["user_tower"]
    finally:
        server.stop(0)
        registry.stop()


def test_version_label_selects_its_version(stubs, user_vectors):
    response = stubs[0].Predict(_predict_request("user_tower", user_vectors[:1], label="stable"))
    assert response.model_spec.version.value == 1
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(_predict_request("user_tower", user_vectors[:1], label="canary"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "canary" in caught.value.details()


def test_rest_predict_row_and_columnar_formats(server, user_tower_in_process, user_vectors):
    _, signature = user_tower_in_process
    expected = signature(user_vector=tf.constant(user_vectors[:3]))
    rows = user_vectors[:3].tolist()
    for path in ("user_tower", "user_tower/versions/1", "user_tower/labels/stable"):
        status, body = _rest(f"{server.rest_url}/v1/models/{path}:predict", {"instances": rows})
        assert status == 200, body
        query = np.asarray([p["query"] for p in body["predictions"]], np.float32)
        np.testing.assert_allclose(query, expected["query"].numpy(), rtol=0, atol=1e-6)
    status, body = _rest(
        f"{server.rest_url}/v1/models/user_tower:predict", {"inputs": {"user_vector": rows}}
    )
    assert status == 200, body
    bias = np.asarray(body["outputs"]["bias"], np.float32)
    np.testing.assert_allclose(bias, expected["bias"].numpy(), rtol=0, atol=1e-6)
    status, body = _rest(f"{server.rest_url}/v1/models/item_tower:predict", {"inputs": rows})
    assert status == 200, body
    assert np.asarray(body["outputs"]).shape == (3, 64)  # one output: the value itself


def test_rest_status_metadata_and_errors(server, user_vectors):
    status, body = _rest(f"{server.rest_url}/v1/models/user_tower")
    assert status == 200
    assert body["model_version_status"][0] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    status, body = _rest(f"{server.rest_url}/v1/models/user_tower/metadata")
    assert status == 200
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["user_vector"]["dtype"] == "DT_FLOAT"
    status, body = _rest(f"{server.rest_url}/v1/models/no_such_tower")
    assert status == 404 and "no_such_tower" in body["error"]
    status, body = _rest(
        f"{server.rest_url}/v1/models/user_tower/versions/7:predict", {"instances": [[0.0] * 128]}
    )
    assert status == 404 and "7" in body["error"]
    status, body = _rest(
        f"{server.rest_url}/v1/models/user_tower:predict", {"instances": [[0.0] * 5]}
    )
    assert status == 400 and "user_vector" in body["error"]
    status, body = _rest(f"{server.rest_url}/v1/models/user_tower:predict", {"rows": []})
    assert status == 400 and "instances" in body["error"]


def test_pushed_versions_load_while_running_under_the_version_policy(
    server, serving_root, stubs, user_vectors
):
    pushes = serving_root / PUSHES
    # a version folder without saved_model.pb (a push in progress on an object store)
    (pushes / "4" / "variables").mkdir(parents=True)
    for version in (2, 3):
        publish_version(str(pushes / "1"), str(pushes), version, {"model_uri": f"test/{version}"})
    # latest { num_versions: 2 }: 2 and 3 served, 1 unloaded once 3 is in, 4 never loaded
    wait_until(
        lambda: _status(stubs, PUSHES) == {1: END, 2: AVAILABLE, 3: AVAILABLE},
        60,
        "versions 2 and 3 available, 1 unloaded",
    )
    latest = stubs[0].Predict(_predict_request(PUSHES, user_vectors[:2]), timeout=10)
    assert latest.model_spec.version.value == 3
    pinned = stubs[0].Predict(_predict_request(PUSHES, user_vectors[:2], version=2), timeout=10)
    assert pinned.model_spec.version.value == 2
    np.testing.assert_array_equal(
        tf.make_ndarray(latest.outputs["query"]), tf.make_ndarray(pinned.outputs["query"])
    )
    # specific { versions: 1 } over the same folder keeps serving 1 alone
    assert _status(stubs, PINNED) == {1: AVAILABLE}
    response = stubs[0].Predict(_predict_request(PINNED, user_vectors[:1]), timeout=10)
    assert response.model_spec.version.value == 1


def test_config_file_edits_are_picked_up(server, serving_root, stubs, user_vectors):
    versions = [v for v, s in _status(stubs, PUSHES).items() if s == AVAILABLE]
    _write_config(serving_root, _config(serving_root, labels={"canary": max(versions)}))

    def canary_answers():
        request = _predict_request(PUSHES, user_vectors[:1], label="canary")
        return stubs[0].Predict(request, timeout=5).model_spec.version.value

    assert wait_until(canary_answers, 30, "label canary served") == max(versions)


def test_read_model_server_config_names_a_bad_file(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { nmae: 'x' } }")
    with pytest.raises(ValueError, match="models.config"):
        read_model_server_config(str(bad))
    bad.write_text("model_config_list { config { name: 'x' } }")
    with pytest.raises(ValueError, match="base_path"):
        read_model_server_config(str(bad))


def test_aspired_versions_follow_tf_servings_policies():
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    available = [1, 2, 5, 7]
    assert aspired_versions(policy, available) == [7]  # no policy: the latest one
    policy.latest.num_versions = 2
    assert aspired_versions(policy, available) == [5, 7]
    policy.specific.versions.extend([2, 3])
    assert aspired_versions(policy, available) == [2]
    policy.all.SetInParent()
    assert aspired_versions(policy, available) == available
    assert aspired_versions(policy, []) == []


def test_a_new_config_keeps_loaded_versions_and_drops_removed_models(pushed_run):
    """What HandleReloadConfigRequest and the config poll apply, in this process."""
    from serving.model_server import ModelRegistry, ServingError

    serving = pushed_run["serving"]  # read only
    registry = ModelRegistry(models_config(str(serving)))
    before = registry.resolve(model_pb2.ModelSpec(name="user_tower"))
    config = models_config(str(serving))
    config.model_config_list.config[0].version_labels["stable"] = 1
    del config.model_config_list.config[1]  # item_tower
    registry.apply_config(config)
    assert (
        registry.resolve(model_pb2.ModelSpec(name="user_tower", version_label="stable")) is before
    )
    with pytest.raises(ServingError) as caught:
        registry.resolve(model_pb2.ModelSpec(name="item_tower"))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert registry.model_names() == ["user_tower"]
