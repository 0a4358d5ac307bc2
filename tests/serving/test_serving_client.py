"""serving.client against a real model server subprocess (the stand-in; also a real
tensorflow_model_server where one is on PATH) over a copy of a pushed run's serving dir."""

from __future__ import annotations

import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import portpicker
import pytest
import tensorflow as tf
from google.protobuf import text_format

from components.pusher.serving_layout import models_config, publish_version
from serving.client import (
    ItemTowerClient,
    ServingUnavailableError,
    TowerClient,
    TowerMismatchError,
    UserTowerClient,
    UserTowerOutput,
)
from serving.model_server.process import ModelServerProcess, real_binary, wait_until

TOLERANCE = 1e-6


class Served(NamedTuple):
    process: ModelServerProcess
    root: Path  # the served copy of the serving dir

    @property
    def target(self) -> str:
        return self.process.grpc_target


@pytest.fixture(scope="module", params=["stand_in", "tensorflow_model_server"])
def served(request, pushed_run, tmp_path_factory):
    binary = None
    if request.param == "tensorflow_model_server":
        binary = real_binary()
        if binary is None:
            pytest.skip("tensorflow_model_server is not on PATH (the real binary's run)")
    root = tmp_path_factory.mktemp(f"client_{request.param}") / "serving"
    shutil.copytree(pushed_run["serving"], root)  # the session's serving dir stays untouched
    config = models_config(str(root))
    config.model_config_list.config[0].version_labels["stable"] = 1
    (root / "models.config").write_text(text_format.MessageToString(config))
    flags = ["--file_system_poll_wait_seconds=1"]
    if binary:
        flags.append("--allow_version_labels_for_unavailable_models=true")
    with ModelServerProcess(root / "models.config", binary=binary, extra_flags=tuple(flags)) as p:
        yield Served(p, root)


@pytest.fixture(scope="module")
def towers_in_process(pushed_run):
    """Both towers' serving_default signatures, loaded in this process (version 1)."""
    user = tf.saved_model.load(str(pushed_run["serving"] / "user_tower" / "1"))
    item = tf.saved_model.load(str(pushed_run["serving"] / "item_tower" / "1"))
    return {
        "keep": (user, item),  # the signatures need their objects alive
        "user": user.signatures["serving_default"],
        "item": item.signatures["serving_default"],
    }


@pytest.fixture(scope="module")
def vectors(pushed_run) -> dict[str, np.ndarray]:
    data = pushed_run["data"]
    return {
        "users": np.asarray(data["users"][:64], np.float32),
        "items": np.asarray(data["items"][:64], np.float32),
    }


def _assert_equals_in_process(out: UserTowerOutput, expected) -> None:
    for name in ("query", "user_embedding", "bias"):
        got = getattr(out, name)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected[name].numpy(), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("batch", [1, 64])
def test_embed_equals_the_user_tower_called_in_process(served, towers_in_process, vectors, batch):
    users = vectors["users"][:batch]
    expected = towers_in_process["user"](user_vector=tf.constant(users))
    with UserTowerClient(served.target, version=1) as client:
        out = client.embed(users)
    assert isinstance(out, UserTowerOutput)
    assert out.served_version == 1
    assert out.query.shape == out.user_embedding.shape == (batch, 64)
    assert out.bias.shape == (batch, 1)
    _assert_equals_in_process(out, expected)
    query, user_embedding, served_version = out[:3]  # the triple
    assert served_version == 1 and query is out.query and user_embedding is out.user_embedding
    with UserTowerClient(served.target) as latest:
        _assert_equals_in_process(latest.embed(users), expected)


def test_item_tower_client_equals_the_item_tower_in_process(served, towers_in_process, vectors):
    expected = towers_in_process["item"](item_vector=tf.constant(vectors["items"]))
    with ItemTowerClient(served.target, embedding_dim=64) as client:
        out = client.embed(vectors["items"])
    assert out.served_version >= 1
    np.testing.assert_allclose(
        out.item_embedding, expected["item_embedding"].numpy(), rtol=0, atol=TOLERANCE
    )


def test_version_label_and_per_call_version_go_in_the_model_spec(served, vectors):
    users = vectors["users"][:2]
    with UserTowerClient(served.target, version_label="stable") as client:
        assert client.embed(users).served_version == 1
        assert client.embed(users, version=1).served_version == 1
        with pytest.raises(TowerMismatchError, match="version 42"):
            client.embed(users, version=42)
        with pytest.raises(ValueError, match="not both"):
            client.embed(users, version=1, version_label="stable")


def test_metadata_mismatches_raise_clear_errors(served, vectors):
    users = vectors["users"][:1]
    cases = [
        (UserTowerClient(served.target, model_name="user_towr"), "user_towr"),
        (UserTowerClient(served.target, input_dim=64), "input 'user_vector' has size 128"),
        (UserTowerClient(served.target, embedding_dim=32), "output 'query' has size 64"),
        (UserTowerClient(served.target, model_name="item_tower"), "expected one input"),
        (
            TowerClient(
                served.target,
                "item_tower",
                input_name="item_vector",
                input_dim=128,
                outputs=("item_embedding", "bias"),
            ),
            "output 'bias' missing",
        ),
    ]
    for client, words in cases:
        with client, pytest.raises(TowerMismatchError, match=words):
            client.predict(np.zeros((1, client.input_dim), np.float32))
    with UserTowerClient(served.target, embedding_dim=64) as client:
        assert client.check_signature() == {"query": 64, "user_embedding": 64, "bias": 1}
        assert client.embed(users).query.shape == (1, 64)


def test_bad_vectors_are_refused_before_any_call(vectors):
    dead = f"127.0.0.1:{portpicker.pick_unused_port()}"
    with UserTowerClient(dead, timeout_s=0.2) as client:
        for bad in (vectors["users"][:2, :64], vectors["users"][0]):
            with pytest.raises(ValueError, match=r"\[batch, 128\]"):
                client.embed(bad)


def test_embed_from_many_threads_answers_each_caller(served, vectors):
    users = vectors["users"]
    with UserTowerClient(served.target, version=1) as client:
        expected = client.embed(users).query
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: (i, client.embed(users[i : i + 1])), range(64)))
    for i, out in answers:
        np.testing.assert_array_equal(out.query, expected[i : i + 1])


def test_no_server_gives_unavailable_within_the_timeout(vectors):
    dead = f"127.0.0.1:{portpicker.pick_unused_port()}"
    with UserTowerClient(dead, timeout_s=0.5, retries=3) as client:
        started = time.monotonic()
        with pytest.raises(ServingUnavailableError, match="UNAVAILABLE after 3 retries") as err:
            client.embed(vectors["users"][:1])
        assert time.monotonic() - started < 0.5 + 0.5
    assert err.value.code is not None and err.value.code.name == "UNAVAILABLE"


def test_a_server_that_never_answers_gives_deadline_exceeded_within_the_timeout(vectors):
    with socket.socket() as silent:  # accepts connections (backlog), never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with UserTowerClient(target, timeout_s=0.5) as client:
            started = time.monotonic()
            with pytest.raises(ServingUnavailableError, match="DEADLINE_EXCEEDED") as err:
                client.embed(vectors["users"][:1])
            elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 0.5 + 0.5
    assert err.value.code.name == "DEADLINE_EXCEEDED"


def test_a_pushed_version_is_served_while_running_and_a_pinned_one_still_answers(served, vectors):
    towers = served.root / "user_tower"
    # the pusher's own publish: copied under a temporary name, renamed to `2`
    publish_version(str(towers / "1"), str(towers), 2, {"model_uri": "test/2"})
    users = vectors["users"][:4]
    with (
        UserTowerClient(served.target, timeout_s=5) as latest,
        UserTowerClient(served.target, version=1) as pinned,
    ):
        assert latest.wait_until_available(60, version=2) == [1, 2]
        new = latest.embed(users)
        old = pinned.embed(users)
    assert new.served_version == 2
    assert old.served_version == 1
    np.testing.assert_allclose(new.query, old.query, rtol=0, atol=TOLERANCE)


def test_client_recovers_when_the_server_returns(served, vectors):
    users = vectors["users"][:1]
    with UserTowerClient(served.target, timeout_s=1.0, retries=3) as client:
        before = client.embed(users)
        served.process.stop()
        try:
            started = time.monotonic()
            with pytest.raises(ServingUnavailableError):
                client.embed(users)
            assert time.monotonic() - started < 1.0 + 0.5
        finally:
            served.process.start()  # same ports; waits until the models are available
        ready = time.monotonic()
        after = wait_until(lambda: client.embed(users), 30, "embed after the restart")
        assert time.monotonic() - ready < 5  # reconnect backoff is capped at 1 s
    np.testing.assert_allclose(after.query, before.query, rtol=0, atol=TOLERANCE)


LIGHT_IMPORT = """
import json, sys, time
started = time.perf_counter()
import serving.client
import serving.recall.app
seconds = time.perf_counter() - started
light = {
    "tensorflow_python": any(m.startswith("tensorflow.python") for m in sys.modules),
    "tensorflow": "tensorflow" in sys.modules,
    # VmHWM: this process' peak (ru_maxrss would carry the forking parent's peak over exec)
    "rss_mb": next(int(line.split()[1]) for line in open("/proc/self/status")
                   if line.startswith("VmHWM")) / 1024,
    "seconds": seconds,
}
import numpy as np
import tensorflow as tf  # the real package still imports afterwards, with the same protos
from serving.client import float_tensor
from serving.client.protocol import tensor_pb2
proto = tf.make_tensor_proto(np.ones((2, 3), np.float32))
light["same_class"] = type(proto) is tensor_pb2.TensorProto
light["round_trip"] = tf.make_ndarray(float_tensor(np.eye(3))).tolist() == np.eye(3).tolist()
print(json.dumps(light))
"""


def test_importing_the_client_leaves_tensorflows_runtime_out():
    """A fresh interpreter: the client and the recall app import without tensorflow.python
    (no TF runtime), and TensorFlow imported afterwards shares the same message classes."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_IMPORT],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    light = json.loads(done.stdout.strip().splitlines()[-1])
    assert not light["tensorflow_python"] and not light["tensorflow"]
    assert light["rss_mb"] < 300
    assert light["same_class"] and light["round_trip"]
