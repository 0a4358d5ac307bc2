"""serving/tf_serving/: the batching parameters parse as TF Serving's proto, and the compose and
Kubernetes files run the official image on the Pusher's layout with consistent flags. They
cannot run here (no container engine): these tests read them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tensorflow as tf
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from components.pusher.serving_layout import MODELS_CONFIG, TOWERS, models_config
from serving.model_server.__main__ import parse_args

HERE = Path(__file__).resolve().parents[2] / "serving" / "tf_serving"
BATCHING = HERE / "batching_parameters.txt"
MOUNT = "/models"


def _batching_parameters_class():
    """TF Serving's BatchingParameters: the installed module when it ships one, else the
    message declared here field by field as session_bundle_config.proto has it."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="finetower_test/batching_parameters.proto",
        package="finetower_test.tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    for number, (name, wrapper) in enumerate(
        [
            ("max_batch_size", "Int64Value"),
            ("batch_timeout_micros", "Int64Value"),
            ("max_enqueued_batches", "Int64Value"),
            ("num_batch_threads", "Int64Value"),
            ("thread_pool_name", "StringValue"),
        ],
        start=1,
    ):
        message.field.add(
            name=name,
            number=number,
            label=f.LABEL_OPTIONAL,
            type=f.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(
        name="allowed_batch_sizes", number=6, label=f.LABEL_REPEATED, type=f.TYPE_INT64
    )
    message.field.add(
        name="pad_variable_length_inputs", number=7, label=f.LABEL_OPTIONAL, type=f.TYPE_BOOL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file.SerializeToString())
    descriptor = pool.FindMessageTypeByName("finetower_test.tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(descriptor)


def _flags(args: list[str]) -> dict[str, str]:
    flags = {}
    for arg in args:
        match = re.fullmatch(r"--([a-z_]+)=(.*)", arg)
        assert match, f"flag {arg!r} is not --name=value"
        flags[match[1]] = match[2]
    return flags


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((HERE / "docker-compose.yaml").read_text())["services"]["tf-serving"]


@pytest.fixture(scope="module")
def kubernetes() -> dict[str, dict]:
    documents = list(yaml.safe_load_all((HERE / "kubernetes.yaml").read_text()))
    return {d["kind"]: d for d in documents}


def test_batching_parameters_parse_as_tf_servings_proto():
    parameters = text_format.Parse(BATCHING.read_text(), _batching_parameters_class()())
    assert parameters.max_batch_size.value >= 1
    assert 0 < parameters.batch_timeout_micros.value <= 10_000  # a few ms at most
    assert parameters.num_batch_threads.value >= 1
    assert parameters.max_enqueued_batches.value >= 1
    sizes = list(parameters.allowed_batch_sizes)
    if sizes:  # TF Serving: increasing, the last one max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == parameters.max_batch_size.value


def test_batching_parameters_reject_a_misspelt_field():
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 8 }", _batching_parameters_class()())


def _image_tag_at_least_tensorflow(image: str) -> None:
    name, _, tag = image.partition(":")
    assert name == "tensorflow/serving"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact release tag"
    exported_by = tuple(int(p) for p in tf.__version__.split(".")[:2])
    assert tuple(int(p) for p in tag.split(".")[:2]) >= exported_by, (
        f"{image} is older than the TensorFlow {tf.__version__} that exports the towers"
    )


def _check_serving_flags(flags: dict[str, str], batching_mount: str) -> None:
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["model_config_file"] == f"{MOUNT}/{MODELS_CONFIG}"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    assert int(flags["file_system_poll_wait_seconds"]) > 0
    assert flags["enable_batching"] == "true"
    assert flags["batching_parameters_file"] == f"{batching_mount}/{BATCHING.name}"
    # the same command line is one the stand-in (which mirrors the real flags) accepts
    args = parse_args([f"--{k}={v}" for k, v in flags.items()])
    assert args.model_config_file == flags["model_config_file"]


def test_compose_serves_the_pushed_layout_with_the_official_image(compose):
    _image_tag_at_least_tensorflow(compose["image"])
    assert compose["entrypoint"] == ["tensorflow_model_server"]
    flags = _flags(compose["command"])
    mounts = {v["target"]: v for v in compose["volumes"]}
    assert mounts[MOUNT]["read_only"] and "SERVING_DIR" in mounts[MOUNT]["source"]
    batching = mounts[flags["batching_parameters_file"]]
    assert (HERE / batching["source"]).resolve() == BATCHING  # the file exists beside it
    _check_serving_flags(flags, str(Path(flags["batching_parameters_file"]).parent))
    # published on loopback only: nothing in TF Serving authenticates a caller
    assert set(compose["ports"]) == {"127.0.0.1:8500:8500", "127.0.0.1:8501:8501"}
    probe = " ".join(compose["healthcheck"]["test"])
    assert all(tower in probe for tower in TOWERS) and "/v1/models/" in probe


def test_kubernetes_runs_the_same_server_ready_only_while_both_towers_are_available(
    compose, kubernetes
):
    container = kubernetes["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == compose["image"]
    assert container["command"] == compose["entrypoint"]
    flags = _flags(container["args"])
    assert flags == _flags(compose["command"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    _check_serving_flags(flags, next(p for p in mounts if mounts[p] == "batching"))
    volumes = {
        v["name"]: v for v in kubernetes["Deployment"]["spec"]["template"]["spec"]["volumes"]
    }
    assert "persistentVolumeClaim" in volumes[mounts[MOUNT]]
    configmap = volumes[mounts[str(Path(flags["batching_parameters_file"]).parent)]]["configMap"]
    assert configmap["name"] == kubernetes["ConfigMap"]["metadata"]["name"]
    assert kubernetes["ConfigMap"]["data"][BATCHING.name] == BATCHING.read_text()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "rest": 8501}
    # an httpGet probe passes on a version that is END (200 with its status): the probe reads
    # the state (tests/serving/test_model_server.py runs it against the stand-in)
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert all(tower in probe for tower in TOWERS) and '"state": "AVAILABLE"' in probe
    assert "/dev/tcp/127.0.0.1/8501" in probe
    service_ports = {p["port"] for p in kubernetes["Service"]["spec"]["ports"]}
    assert service_ports == {8500, 8501}
    assert (
        kubernetes["Service"]["spec"]["selector"]
        == (kubernetes["Deployment"]["spec"]["selector"]["matchLabels"])
    )


def test_only_the_recall_pods_may_reach_tf_serving(kubernetes):
    policy = kubernetes["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == kubernetes["Deployment"]["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "finetower-recall"}}}]
    assert {p["port"] for p in rule["ports"]} == {8500, 8501}


def test_the_pushers_base_path_prefix_names_the_mounted_towers(tmp_path):
    config = models_config(str(tmp_path / "serving"), base_path_prefix=MOUNT)
    paths = {m.name: m.base_path for m in config.model_config_list.config}
    assert paths == {tower: f"{MOUNT}/{tower}" for tower in TOWERS}
    for model in config.model_config_list.config:
        assert model.model_version_policy.latest.num_versions >= 2  # old version stays loaded
