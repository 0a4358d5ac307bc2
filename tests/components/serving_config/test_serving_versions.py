"""ServingConfig: what TF Serving loads is decided after a version is published — explicit
versions and labels in models.config, infra validation against a real model server process
(the stand-in, or tensorflow_model_server when on PATH), pruning that never removes what
something names, orphans of crashed pushes cleaned."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2
from tfx.types import standard_artifacts

from components.common.errors import ArtifactError
from components.embeddings_publisher.ann import ann_uri
from components.pusher import serving_layout, warmup
from components.pusher.component import Executor as PusherExecutor
from components.serving_config import lifecycle
from components.serving_config.component import serve_version
from components.serving_config.holders import PIN_FILE
from components.serving_config.validate import InfraValidationError, validate_version
from serving.model_server.process import ModelServerProcess, wait_until
from tests.tiny_towers import tiny_model

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def push(root: Path, name: str, scale: float) -> int:
    """Push a new tiny model with the real Pusher executor; its version."""
    out = standard_artifacts.PushedModel()
    PusherExecutor().Do(
        {"model": [tiny_model(root / "models", name, scale)]},
        {"pushed_model": [out]},
        {"serving_dir": str(root / "serving")},
    )
    return out.get_int_custom_property("pushed_version")


def publish_index(root: Path, version: int) -> None:
    """What the EmbeddingsPublisher leaves for a version (its own tests build real indexes):
    the published index folder with its manifest, the file ServingConfig checks for."""
    folder = Path(ann_uri(str(root / "out"), version))
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"version": version}))


def config_of(root: Path) -> tuple[list[int], dict[str, int]]:
    text = (root / "serving" / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    found = {
        c.name: (sorted(c.model_version_policy.specific.versions), dict(c.version_labels))
        for c in config.model_config_list.config
    }
    assert set(found) == {"user_tower", "item_tower"}
    assert found["user_tower"] == found["item_tower"]  # both towers move together
    return found["user_tower"]


def serve(root: Path, version: int, **kwargs) -> dict:
    kwargs.setdefault("infra_validate", False)
    return serve_version(str(root / "serving"), str(root / "out"), version, **kwargs)


def on_disk(root: Path) -> list[int]:
    both = [
        serving_layout.versions(str(root / "serving" / t)) for t in ("user_tower", "item_tower")
    ]
    assert both[0] == both[1]  # pruned together
    return both[0]


def test_two_pushes_in_a_row_name_the_right_versions_at_each_step(tmp_path):
    for step, (scale, named, labels) in enumerate(
        [(1.0, [1], {}), (2.0, [1, 2], {"stable": 1}), (3.0, [2, 3], {"stable": 2})], start=1
    ):
        assert push(tmp_path, f"m{step}", scale) == step
        publish_index(tmp_path, step)
        report = serve(tmp_path, step, infra_validate=step == 3)
        assert config_of(tmp_path) == (named, labels), step
    assert report["infra_validation"]["requests"] == {"user_tower": 1, "item_tower": 1}
    # the config loads in a real model server: exactly the named versions, `stable` resolves
    config = tmp_path / "serving" / "models.config"
    with ModelServerProcess(config) as server, grpc.insecure_channel(server.grpc_target) as ch:
        assert wait_until(lambda: loaded(ch) == [2, 3], 60, "versions 2 and 3 AVAILABLE")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "user_tower"
        request.model_spec.version_label = "stable"
        request.inputs["user_vector"].CopyFrom(tf.make_tensor_proto(np.ones((1, 4), "f4")))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
    assert answer.model_spec.version.value == 2
    assert np.allclose(tf.make_ndarray(answer.outputs["embedding"]), 2.0)  # version 2's scale


def loaded(channel) -> list[int]:
    """The user tower's AVAILABLE versions, as the model server reports them."""
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name="user_tower")
        ),
        timeout=10,
    )
    return sorted(s.version for s in status.model_version_status if s.state == AVAILABLE)


def test_labels_for_unavailable_models_label_the_new_version_stable(tmp_path):
    for step in (1, 2):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
        serve(tmp_path, step, labels_for_unavailable=True)
    assert config_of(tmp_path) == ([1, 2], {"stable": 2, "previous": 1})


def test_a_failed_publish_leaves_the_config_naming_the_old_version(tmp_path):
    push(tmp_path, "m1", 1.0)
    publish_index(tmp_path, 1)
    serve(tmp_path, 1)
    before = (tmp_path / "serving" / "models.config").read_text()
    push(tmp_path, "m2", 2.0)  # pushed, but its index was never published
    with pytest.raises(ArtifactError, match="version 2 has no published index"):
        serve(tmp_path, 2, keep=1)
    assert (tmp_path / "serving" / "models.config").read_text() == before
    assert on_disk(tmp_path) == [1, 2]


def test_a_tower_that_answers_nan_is_never_named(tmp_path):
    push(tmp_path, "m1", 1.0)
    publish_index(tmp_path, 1)
    serve(tmp_path, 1)
    before = (tmp_path / "serving" / "models.config").read_text()
    push(tmp_path, "m2", float("nan"))
    publish_index(tmp_path, 2)
    with pytest.raises(InfraValidationError, match="version 2: output 'embedding' is .*not finite"):
        serve(tmp_path, 2, infra_validate=True, keep=1)
    assert (tmp_path / "serving" / "models.config").read_text() == before
    assert on_disk(tmp_path) == [1, 2]  # nothing pruned by a failed run


def test_a_tower_that_fails_to_load_is_refused_with_the_reason(tmp_path):
    push(tmp_path, "m1", 1.0)
    variables = tmp_path / "serving" / "user_tower" / "1" / "variables"
    for data in variables.glob("variables.data-*"):
        data.write_bytes(b"not a checkpoint shard")
    with pytest.raises(
        InfraValidationError, match="version 1 failed to load.*user_tower version 1 failed"
    ):
        validate_version(str(tmp_path / "serving"), 1, timeout_s=120)


def test_the_warmup_file_parses_as_prediction_logs_that_a_model_server_answers(tmp_path):
    push(tmp_path, "m1", 0.5)
    folder = tmp_path / "serving" / "user_tower" / "1"
    records = list(tf.data.TFRecordDataset(str(folder / warmup.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert (request.model_spec.name, request.model_spec.signature_name) == (
        "user_tower",
        "serving_default",
    )
    vectors = tf.make_ndarray(request.inputs["user_vector"])
    assert vectors.shape == (warmup.WARMUP_BATCH, 4) and vectors.dtype == np.float32
    config = tmp_path / "replay.config"
    config.write_text(
        text_format.MessageToString(serving_layout.models_config(str(tmp_path / "serving")))
    )
    with ModelServerProcess(config) as server, grpc.insecure_channel(server.grpc_target) as ch:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
    assert np.allclose(tf.make_ndarray(answer.outputs["embedding"]), vectors * 0.5)


def test_pruning_never_removes_what_the_config_or_a_pin_names(tmp_path):
    for step in (1, 2):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
        serve(tmp_path, step, keep=1)
    (tmp_path / "serving" / PIN_FILE).write_text(json.dumps({"version": 1}))  # a rollback
    for step in (3, 4, 5):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
        report = serve(tmp_path, step, keep=1)
    # 5 new, 4 served before, 1 pinned, 3 named by the previous config; 2 nothing names
    assert config_of(tmp_path) == ([1, 4, 5], {"stable": 1})  # the pinned version is stable
    assert on_disk(tmp_path) == [1, 3, 4, 5]
    assert "pinned by a rollback" in report["kept_because"]["1"]
    (tmp_path / "serving" / PIN_FILE).unlink()
    push(tmp_path, "m6", 6.0)
    publish_index(tmp_path, 6)
    serve(tmp_path, 6, keep=1)
    assert config_of(tmp_path) == ([5, 6], {"stable": 5})
    assert on_disk(tmp_path) == [1, 4, 5, 6]  # 1 and 4 named by the previous config: next time


def test_keep_versions_zero_prunes_nothing(tmp_path):
    for step in (1, 2, 3):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
        serve(tmp_path, step)
    assert config_of(tmp_path)[0] == [2, 3]
    assert on_disk(tmp_path) == [1, 2, 3]


def test_orphans_of_a_crashed_push_are_cleaned_and_never_named(tmp_path):
    push(tmp_path, "m1", 1.0)
    publish_index(tmp_path, 1)
    serve(tmp_path, 1)
    serving = tmp_path / "serving"
    # a push that crashed after the item tower, and one that wrote an unfinished folder
    (serving / "item_tower" / "2").mkdir()
    (serving / "item_tower" / "2" / "saved_model.pb").write_bytes(b"x")
    (serving / "user_tower" / "3" / "variables").mkdir(parents=True)
    assert push(tmp_path, "m4", 4.0) == 4
    publish_index(tmp_path, 4)
    report = serve(tmp_path, 4)
    assert report["orphans_removed"] == [2, 3]
    assert sorted(os.listdir(serving / "user_tower")) == ["1", "4"]
    assert sorted(os.listdir(serving / "item_tower")) == ["1", "4"]
    assert config_of(tmp_path) == ([1, 4], {"stable": 1})


def test_redis_current_and_kept_versions_are_held(redis_server, tmp_path):
    from serving.store import publish

    for step in (1, 2, 3):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
    ids = [f"item-{i}" for i in range(5)]
    vectors = np.eye(5, 4, dtype=np.float32)
    for version in (1, 2):  # Redis serves 2 and keeps 1 (an operator's rollback target)
        publish(redis_server.url, f"v{version}", ids, vectors, vectors, 0.0, keep=2)
    serve(tmp_path, 1, keep=1, redis_url=redis_server.url)
    assert config_of(tmp_path) == ([1, 2], {})  # Redis current is loaded too
    report = serve(tmp_path, 3, keep=1, redis_url=redis_server.url)
    assert config_of(tmp_path) == ([2, 3], {"stable": 2})
    assert "Redis current" in report["kept_because"]["2"]
    assert "a kept Redis store version" in report["kept_because"]["1"]
    assert on_disk(tmp_path) == [1, 2, 3]


def test_plan_holds_everything_that_names_a_version():
    holders = lifecycle.Holders(redis_current=3, redis_kept=frozenset({2, 3}), pinned=1)
    plan = lifecycle.plan(6, [1, 2, 3, 4, 5, 6, 7], ([4, 5], {}), holders, keep=1, orphans=[])
    assert plan.named == [1, 3, 5, 6]
    assert plan.labels == {"stable": 5}
    assert plan.prune == []  # 4 named by the previous config, 7 newer (a push in flight)
    plan = lifecycle.plan(6, [1, 2, 3, 4, 5, 6, 7, 8], ([5], {}), lifecycle.Holders(), keep=1)
    assert plan.prune == [1, 2, 3, 4] and plan.named == [5, 6]


def test_a_rollback_is_named_by_the_cli_and_labelled_stable_once_loaded(tmp_path, capsys):
    from components.serving_config.__main__ import main

    for step in (1, 2, 3):
        push(tmp_path, f"m{step}", float(step))
        publish_index(tmp_path, step)
        serve(tmp_path, step)
    (tmp_path / "serving" / PIN_FILE).write_text(json.dumps({"version": 1}))
    args = ["--serving_dir", str(tmp_path / "serving"), "--output_dir", str(tmp_path / "out")]
    assert main([*args, "--version", "1", "--skip_infra_validation"]) == 0
    assert json.loads(capsys.readouterr().out)["named"] == [1, 3]
    assert config_of(tmp_path) == ([1, 3], {"stable": 3})  # 1 is not loaded yet
    assert main([*args, "--version", "1", "--skip_infra_validation"]) == 0
    assert config_of(tmp_path) == ([1, 3], {"stable": 1})
    assert main([*args, "--version", "7"]) == 1
    assert "version 7 is not completely pushed" in capsys.readouterr().err
