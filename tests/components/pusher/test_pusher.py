"""TwoTowerPusher: TF Serving's layout, one version for both towers, idempotent, atomic, with
warm-up records; models.config and pruning are ServingConfig's (test_serving_versions.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from components.common.errors import ArtifactError
from components.pusher import serving_layout, warmup
from components.pusher.component import Executor
from tests.tiny_towers import tiny_model


def fake_model(root: Path, name: str = "model") -> standard_artifacts.Model:
    """A Model artifact holding two small real tower SavedModels (the Pusher reads their
    signatures to write warm-up records)."""
    return tiny_model(root, name, scale=1.0 + len(name))


def blessing(blessed: bool) -> standard_artifacts.ModelBlessing:
    artifact = standard_artifacts.ModelBlessing()
    artifact.set_int_custom_property("blessed", int(blessed))
    return artifact


def push(model, serving: Path, blessed: bool | None = True, **params):
    pushed = standard_artifacts.PushedModel()
    inputs = {"model": [model]}
    if blessed is not None:
        inputs["model_blessing"] = [blessing(blessed)]
    Executor().Do(inputs, {"pushed_model": [pushed]}, {"serving_dir": str(serving), **params})
    return pushed


def test_both_towers_get_one_integer_version_with_warmup_and_no_config(tmp_path):
    pushed = push(fake_model(tmp_path), tmp_path / "serving")
    serving = tmp_path / "serving"
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_int_custom_property("pushed_version") == 1
    for tower in ("user_tower", "item_tower"):
        assert os.listdir(serving / tower) == ["1"]
        source = tmp_path / "model" / tower / "saved_model.pb"
        assert (serving / tower / "1" / "saved_model.pb").read_bytes() == source.read_bytes()
        logs = warmup.read_warmup(str(serving / tower / "1"))
        assert [log.predict_log.request.model_spec.name for log in logs] == [tower]
        info = json.loads(
            (serving / tower / "1" / "assets.extra" / "finetower_push.json").read_text()
        )
        assert info["model_uri"] == str(tmp_path / "model") and info["version"] == 1
    # what TF Serving loads is ServingConfig's decision (tests/test_serving_versions.py)
    assert not (serving / "models.config").exists()


def test_the_same_model_keeps_its_version_and_a_new_one_gets_the_next(tmp_path):
    serving = tmp_path / "serving"
    model = fake_model(tmp_path, "a")
    assert push(model, serving).get_int_custom_property("pushed_version") == 1
    assert push(model, serving).get_int_custom_property("pushed_version") == 1  # a cached rerun
    assert push(fake_model(tmp_path, "b"), serving).get_int_custom_property("pushed_version") == 2
    assert sorted(os.listdir(serving / "user_tower")) == ["1", "2"]


def test_not_blessed_pushes_nothing(tmp_path):
    pushed = push(fake_model(tmp_path), tmp_path / "serving", blessed=False)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not (tmp_path / "serving").exists()


def test_a_failed_copy_leaves_no_visible_version(tmp_path, monkeypatch):
    serving = tmp_path / "serving"
    push(fake_model(tmp_path, "a"), serving)

    def broken_copy(src, dst, overwrite=False):
        raise OSError("disk full")

    monkeypatch.setattr(serving_layout.tf.io.gfile, "copy", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        push(fake_model(tmp_path, "b"), serving)
    for tower in ("user_tower", "item_tower"):
        assert serving_layout.versions(str(serving / tower)) == [1]
        assert sorted(os.listdir(serving / tower)) == ["1"]  # no half-written staging folder
    assert not (serving / "models.config").exists()


def test_base_path_prefix_and_version_policy(tmp_path):
    config = serving_layout.models_config(str(tmp_path), base_path_prefix="/models", num_versions=3)
    assert [c.base_path for c in config.model_config_list.config] == [
        "/models/user_tower",
        "/models/item_tower",
    ]
    assert {
        c.model_version_policy.latest.num_versions for c in config.model_config_list.config
    } == {3}
    assert {c.model_platform for c in config.model_config_list.config} == {"tensorflow"}


def test_versions_ignore_what_tf_serving_ignores(tmp_path):
    for name in ("1", "10", "2", ".tmp-3-abc", "latest"):
        (tmp_path / name).mkdir()
    assert serving_layout.versions(str(tmp_path)) == [1, 2, 10]
    assert serving_layout.next_version(str(tmp_path.parent / "nothing")) == 1


def test_a_tower_that_is_not_a_saved_model_is_refused_naming_it(tmp_path):
    model = fake_model(tmp_path, "a")
    broken = Path(model.uri) / "user_tower" / "saved_model.pb"
    broken.write_bytes(b"user_tower")
    with pytest.raises(ArtifactError, match=f"{broken}: not a SavedModel"):
        push(model, tmp_path / "serving")
    for tower in ("user_tower", "item_tower"):  # nothing pushed, not even the item tower
        assert serving_layout.versions(str(tmp_path / "serving" / tower)) == []
