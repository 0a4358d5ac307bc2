"""components/latest_blessed ServedModel: the Trainer's warm start on open-source KFP, the
executor run on a real serving dir, and the Trainer's build_model/warm_start_record reading
what it wrote (a copy of the served model, or an empty Model recorded as not found)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx.types import standard_artifacts

from components.latest_blessed.component import ServedModelExecutor
from components.latest_blessed.warm_start import RECORD_FILE, resolve_base_model
from components.trainer.model import build_dssm
from components.trainer.training import build_model, warm_start_record
from pipeline.configs import TrainerConfig

DIM = 8


def saved_dssm(model_uri: str, seed: int) -> list[np.ndarray]:
    """A Model artifact folder holding a DSSM in Format-Serving; returns its weights."""
    keras.utils.set_random_seed(seed)
    model = build_dssm(DIM, DIM)
    model.save(f"{model_uri}/Format-Serving")
    with tf.io.gfile.GFile(f"{model_uri}/finetower_model.json", "w") as f:
        json.dump({"history": {"val_auc": [0.5, 0.75]}}, f)
    return model.get_weights()


def push(serving: str, version: int, model_uri: str, towers=("user_tower", "item_tower")):
    """What TwoTowerPusher leaves: each tower's version folder with its push record."""
    for tower in towers:
        folder = f"{serving}/{tower}/{version}"
        tf.io.gfile.makedirs(f"{folder}/assets.extra")
        with tf.io.gfile.GFile(f"{folder}/assets.extra/finetower_push.json", "w") as f:
            json.dump({"model_uri": model_uri}, f)
        with tf.io.gfile.GFile(f"{folder}/saved_model.pb", "w") as f:
            f.write("pb")


def run_step(serving: str, output_uri: str) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = output_uri
    ServedModelExecutor().Do({}, {"model": [model]}, {"serving_dir": serving})
    return model


@pytest.fixture
def trainer_config() -> TrainerConfig:
    return TrainerConfig(user_dim=DIM, item_dim=DIM)


def test_newest_complete_push_is_copied_and_the_trainer_starts_from_it(tmp_path, trainer_config):
    serving = str(tmp_path / "serving")
    saved_dssm(str(tmp_path / "Trainer/model/1"), seed=1)
    second = saved_dssm(str(tmp_path / "Trainer/model/2"), seed=2)
    saved_dssm(str(tmp_path / "Trainer/model/3"), seed=3)
    push(serving, 1, str(tmp_path / "Trainer/model/1"))
    push(serving, 2, str(tmp_path / "Trainer/model/2"))
    # a newer push still in progress (no user tower yet) is not the served model
    push(serving, 3, str(tmp_path / "Trainer/model/3"), towers=("item_tower",))

    model = run_step(serving, str(tmp_path / "served_model/model/1"))
    assert model.get_int_custom_property("found") == 1
    assert model.get_string_custom_property("served_model_uri") == str(tmp_path / "Trainer/model/2")
    assert model.get_string_custom_property("tfx_version")  # read as a new-style Model

    base_model = f"{model.uri}/Format-Serving"  # what TFX's Trainer passes as fn_args.base_model
    assert resolve_base_model(base_model)[1]["version"] == 2
    warm = build_model(trainer_config, tf.distribute.get_strategy(), base_model)
    for got, expected in zip(warm.get_weights(), second, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_empty_serving_dir_gives_a_model_marked_not_found_and_training_from_init(
    tmp_path, trainer_config
):
    serving = str(tmp_path / "serving")
    model = run_step(serving, str(tmp_path / "served_model/model/1"))
    assert model.get_int_custom_property("found") == 0
    assert not tf.io.gfile.exists(f"{model.uri}/Format-Serving")
    assert json.loads((tmp_path / "served_model/model/1" / RECORD_FILE).read_text()) == {
        "found": 0,
        "serving_dir": serving,
    }

    base_model = f"{model.uri}/Format-Serving"
    assert resolve_base_model(base_model) == (None, {"found": 0, "serving_dir": serving})
    keras.utils.set_random_seed(0)
    fresh = build_model(trainer_config, tf.distribute.get_strategy(), base_model)
    keras.utils.set_random_seed(0)
    initial = build_dssm(DIM, DIM).get_weights()
    for got, expected in zip(fresh.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(got, expected)  # Keras' initialisation, nothing loaded
    # finetower_model.json's "warm_start": trained from initialisation, and why
    record = warm_start_record(fresh, inputs=None, base_model=base_model)
    assert record == {"base_model": None, "served_model": {"found": 0, "serving_dir": serving}}


def test_a_base_model_without_a_record_is_used_as_given(tmp_path):
    """--base_model (an Importer) and the local runner's Model from ML Metadata: no record."""
    saved_dssm(str(tmp_path / "imported"), seed=4)
    base_model = str(tmp_path / "imported" / "Format-Serving")
    assert resolve_base_model(base_model) == (base_model, None)
    assert resolve_base_model(None) == (None, None)
