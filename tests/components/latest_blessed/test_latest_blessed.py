"""components/latest_blessed: the Evaluator's baseline from the serving dir's push records
(open-source KFP's replacement for TFX's Resolver), on TensorFlow's in-memory `ram://`
filesystem so that any pathlib/os.path use on a URI shows."""

from __future__ import annotations

import json
import uuid

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.latest_blessed.component import Executor, latest_pushed_model_uri


def write(path: str, text: str = "x") -> None:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def model(root: str, name: str) -> str:
    uri = f"{root}/Trainer/model/{name}"
    write(f"{uri}/Format-Serving/saved_model.pb", name)
    write(f"{uri}/Format-Serving/variables/variables.index", name)
    return uri


def push(serving: str, version: int, model_uri: str, towers=("user_tower", "item_tower")):
    for tower in towers:
        folder = f"{serving}/{tower}/{version}"
        write(f"{folder}/assets.extra/finetower_push.json", json.dumps({"model_uri": model_uri}))
        write(f"{folder}/saved_model.pb")


@pytest.fixture
def root() -> str:
    return f"ram://latest_blessed/{uuid.uuid4().hex}"


def test_latest_complete_push_wins(root):
    serving = f"{root}/serving"
    assert latest_pushed_model_uri(serving) is None  # nothing pushed yet
    first, second, third = (model(root, n) for n in ("1", "2", "3"))
    push(serving, 1, first)
    push(serving, 2, second)
    push(serving, 10, third, towers=("item_tower",))  # interrupted: no user tower
    assert latest_pushed_model_uri(serving) == second  # 10 > 2 numerically, but incomplete
    push(serving, 10, third)
    assert latest_pushed_model_uri(serving) == third


def test_a_push_whose_model_is_gone_is_skipped(root):
    serving = f"{root}/serving"
    kept = model(root, "1")
    push(serving, 1, kept)
    push(serving, 2, f"{root}/Trainer/model/deleted")
    assert latest_pushed_model_uri(serving) == kept


def _run(root: str, serving: str, candidate_uri: str):
    candidate = standard_artifacts.Model()
    candidate.uri = candidate_uri
    baseline = standard_artifacts.Model()
    baseline.uri = f"{root}/latest_blessed_model/baseline/1"
    Executor().Do({"model": [candidate]}, {"baseline": [baseline]}, {"serving_dir": serving})
    with tf.io.gfile.GFile(f"{baseline.uri}/Format-Serving/saved_model.pb") as f:
        return baseline, f.read()


def test_executor_copies_the_pushed_model_else_the_candidate(root):
    serving = f"{root}/serving"
    candidate = model(root, "candidate")
    baseline, content = _run(root, serving, candidate)
    assert content == "candidate"  # first run: compared with itself, the floor decides
    assert baseline.get_int_custom_property("baseline_is_candidate") == 1

    push(serving, 1, model(root, "served"))
    baseline, content = _run(f"{root}/second", serving, candidate)
    assert content == "served"
    assert baseline.get_int_custom_property("baseline_is_candidate") == 0
    assert baseline.get_string_custom_property("baseline_model_uri").endswith("/served")
    assert tf.io.gfile.exists(f"{baseline.uri}/Format-Serving/variables/variables.index")
