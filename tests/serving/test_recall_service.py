"""The recall service in-process (fastapi.testclient) over real parts: the local model server
as a subprocess serving a copy of the pushed run's towers, a real faiss index built by the
EmbeddingsPublisher. Answers are checked against the full model scoring every item."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from components.embeddings_publisher import publishing
from components.pusher.serving_layout import write_models_config
from serving.client import UserTowerClient
from serving.recall import RecallService, create_app, top_items
from tests.components.embeddings_publisher.test_embeddings_publisher import (
    copy_run,
    push_copy,
    run_publisher,
    write_catalogue,
)
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 120.0
TIMEOUT_S = 2.0


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(interval_s)  # a poll interval, not a synchronization


class ModelServer:
    """`python -m serving.model_server` on a fixed loopback port; stop() and start() again."""

    def __init__(self, config: Path, log: Path, port: int | None = None) -> None:
        self.config, self.log, self.port = config, log, port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *versions: int) -> ModelServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.model_server",
                "--port",
                str(self.port),
                "--bind_address",
                "127.0.0.1",
                "--model_config_file",
                str(self.config),
                "--model_config_file_poll_wait_seconds",
                "1",
                "--file_system_poll_wait_seconds",
                "0.5",
            ],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for version in versions or (1,):
            self.wait_available(version)
        return self

    def wait_available(self, version: int) -> None:
        with UserTowerClient(self.target, timeout_s=1.0, retries=0) as client:
            deadline = time.monotonic() + STARTUP_S
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"model server exited: {self.log.read_text()[-3000:]}")
                try:
                    client.wait_until_available(2.0, version=version)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def prepare_output(pushed_run: dict, root: Path) -> dict:
    """A copy of the pushed run with its own models.config and version 1's ANN index."""
    out = copy_run(pushed_run, root)
    write_models_config(str(out / "serving"))
    items = write_catalogue(pushed_run, root / "items.csv")
    run_publisher(out, 1, root, items=items)
    return {"out": out, "items": items, "root": root}


def full_model(pushed_run: dict):
    """The Trainer's whole DSSM (Format-Serving): serialized Examples -> probability."""
    (path,) = sorted((pushed_run["out"] / "tfx").glob("Trainer/model/*/Format-Serving"))[-1:]
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]

    def probabilities(user_vector: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
        examples = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "user_vector": tf.train.Feature(
                            float_list=tf.train.FloatList(value=user_vector)
                        ),
                        "item_vector": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                    }
                )
            ).SerializeToString()
            for row in item_vectors
        ]
        return serve(examples=tf.constant(examples))["probability"].numpy().ravel()

    return probabilities


@pytest.fixture(scope="module")
def world(pushed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("recall")
    prepared = prepare_output(pushed_run, root)
    with ModelServer(prepared["out"] / "serving" / "models.config", root / "ms.log") as server:
        server.start(1)
        yield {**prepared, "server": server}


@pytest.fixture(scope="module")
def client(world):
    tower = UserTowerClient(world["server"].target, timeout_s=TIMEOUT_S, retries=0)
    service = RecallService(
        world["out"], tower, serving_dir=world["out"] / "serving", poll_s=0.2, timeout_s=TIMEOUT_S
    )
    with TestClient(create_app(service)) as client:
        wait_for(lambda: client.get("/health").status_code == 200, 30, "ready")
        yield client
    tower.close()


@pytest.fixture(scope="module")
def catalogue(world):
    ann = world["out"] / "ann_index" / "1"
    ids = json.loads((ann / "ids.json").read_text())
    ids_, embeddings, _ = publishing.read_item_embeddings(world["out"] / "item_embeddings" / "1")
    assert ids == ids_
    return {"ids": ids, "vectors": np.load(ann / "item_vectors.npy"), "embeddings": embeddings}


def test_top_n_is_the_full_models_top_n(client, pushed_run, catalogue):
    probabilities = full_model(pushed_run)
    users = pushed_run["data"]["users"][[0, 17, 333]].astype(np.float32)
    for user in users:
        answer = client.post("/recall", json={"user_vector": user.tolist(), "n": 10})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == 1 and len(body["items"]) == 10
        exact = probabilities(user, catalogue["vectors"])
        expected = [catalogue["ids"][i] for i in np.argsort(-exact, kind="stable")[:10]]
        assert [item["item_id"] for item in body["items"]] == expected
        row = {item: r for r, item in enumerate(catalogue["ids"])}
        got = np.array([item["probability"] for item in body["items"]])
        np.testing.assert_allclose(got, exact[[row[i] for i in expected]], atol=2e-6)
        logits = np.array([item["score"] for item in body["items"]])
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), got, atol=1e-7)


def test_history_is_the_mean_of_its_last_five_items(client, catalogue):
    history = catalogue["ids"][10:18]
    mean = catalogue["vectors"][13:18].mean(axis=0)
    by_history = client.post("/recall", json={"history": [*history, "no-such-item"], "n": 20})
    by_vector = client.post("/recall", json={"user_vector": mean.tolist(), "n": 20})
    assert by_history.status_code == by_vector.status_code == 200, by_history.text
    assert by_history.json()["unknown_history"] == 1
    got, want = by_history.json()["items"], by_vector.json()["items"]
    assert [i["item_id"] for i in got] == [i["item_id"] for i in want]
    np.testing.assert_allclose(
        [i["score"] for i in got], [i["score"] for i in want], rtol=1e-5, atol=1e-5
    )
    seen = client.post("/recall", json={"history": history, "n": 20, "exclude_seen": True})
    assert not set(history) & {i["item_id"] for i in seen.json()["items"]}
    assert len(seen.json()["items"]) == 20


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_vector": [0.1] * 127}, "user_vector"),
        ({"user_vector": [0.1] * 128, "n": 0}, "n"),
        ({"user_vector": [0.1] * 128, "n": 1001}, "n"),
        ({"history": ["a"] * 1001}, "history"),
        ({"history": []}, "history"),
        ({"history": ["x" * 300]}, "history.0"),
        ({"history": ["nothing-known"]}, "history"),
        ({"user_vector": [0.1] * 128, "history": ["a"]}, "user_vector|history"),
        ({"n": 3}, "user_vector|history"),
        ({"user_vector": [0.1] * 128, "exclude_seen": True}, "exclude_seen"),
        ({"user_vector": [0.1] * 128, "k": 3}, "k"),
        ({"user_vector": ["a"] + [0.1] * 127}, "user_vector.0"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, field):
    answer = client.post("/recall", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and answer.json()["error"].startswith(f"{field}: ")


def test_a_body_past_the_bound_is_refused_unread(client):
    answer = client.post(
        "/recall",
        content=b'{"history": [' + b'"x",' * 400_000 + b'"x"]}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413 and answer.json()["field"] == "body"


def test_health_and_metrics(client):
    health = client.get("/health").json()
    assert health["ready"] and health["versions"] == {
        "user_tower": 1,
        "item_embeddings": 1,
        "store": None,
    }
    assert health["backend"] == "ivf" and health["items"] > 0
    client.post("/recall", json={"user_vector": [0.0] * 128})
    text = client.get("/metrics").text
    assert 'finetower_recall_requests_total{route="/recall",status="200"}' in text
    assert "finetower_recall_version 1.0" in text
    assert "finetower_recall_ready 1.0" in text


def test_the_api_key_is_required_when_set(world):
    tower = UserTowerClient(world["server"].target, timeout_s=TIMEOUT_S, retries=0)
    service = RecallService(world["out"], tower, timeout_s=TIMEOUT_S)
    with TestClient(create_app(service, api_key="s3cret")) as keyed:
        body = {"user_vector": [0.0] * 128}
        assert keyed.post("/recall", json=body).status_code == 401
        assert keyed.post("/recall", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert keyed.post("/recall", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert keyed.get("/health", headers=bearer).status_code == 200
    tower.close()


def test_items_of_a_version_whose_user_tower_is_not_served_are_refused(world, pushed_run, tmp_path):
    # version 3 is pushed and indexed here, but the model server never serves version 3
    out = copy_run(pushed_run, tmp_path)
    push_copy(out, 3)
    run_publisher(out, 3, tmp_path, items=world["items"])
    tower = UserTowerClient(world["server"].target, timeout_s=TIMEOUT_S, retries=0)
    service = RecallService(out, tower, serving_dir=out / "serving", timeout_s=TIMEOUT_S)
    with TestClient(create_app(service)) as refused:
        answer = refused.post("/recall", json={"user_vector": [0.0] * 128})
        assert answer.status_code == 503
        assert "version 3" in answer.json()["error"] and "not served" in answer.json()["error"]
        health = refused.get("/health")
        assert health.status_code == 503 and health.json()["versions"]["user_tower"] is None
    tower.close()


def test_a_new_push_is_served_once_its_user_tower_is(world, pushed_run, tmp_path):
    out = copy_run(pushed_run, tmp_path)
    run_publisher(out, 1, tmp_path, items=world["items"])
    tower = UserTowerClient(world["server"].target, timeout_s=TIMEOUT_S, retries=0)
    service = RecallService(out, tower, poll_s=0.1, timeout_s=TIMEOUT_S)
    body = {"user_vector": [0.05] * 128}
    with TestClient(create_app(service)) as follower:
        assert follower.post("/recall", json=body).json()["version"] == 1
        # version 2's items arrive first: the service keeps serving version 1 whole
        push_copy(out, 2)
        run_publisher(out, 2, tmp_path, items=world["items"])
        wait_for(
            lambda: "version 2" in (follower.get("/health").json()["pending"] or ""),
            30,
            "version 2 not seen",
        )
        assert follower.post("/recall", json=body).json()["version"] == 1
        # then its towers reach the model server (a copy of this push into what it serves)
        serving = world["out"] / "serving"
        for name in ("item_tower", "user_tower"):
            staging = serving / name / ".tmp-2"
            shutil.copytree(out / "serving" / name / "2", staging)
            staging.rename(serving / name / "2")
        wait_for(lambda: follower.get("/health").json()["version"] == 2, 90, "no switch to 2")
        answer = follower.post("/recall", json=body)
        assert answer.status_code == 200 and answer.json()["version"] == 2
    tower.close()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_vector": [0.1] * 3 + [1e19] + [0.1] * 124}, "user_vector.3"),
        ({"user_vector": [1e38] * 128}, "user_vector.0"),
        ({"user_vector": [0.1] * 127 + [-1e30]}, "user_vector.127"),
        ({"user_vector": [0.1] * 127 + [10000.5]}, "user_vector.127"),
        ({"user_vector": [0.1] * 128, "n": "5"}, "n"),
        ({"user_vector": [0.1] * 128, "n": 5.0}, "n"),
        ({"user_vector": [0.1] * 128, "n": True}, "n"),
        ({"history": ["a"], "exclude_seen": "yes"}, "exclude_seen"),
        ({"history": ["a"], "exclude_seen": 1}, "exclude_seen"),
        ({"user_vector": ["0.1"] + [0.1] * 127}, "user_vector.0"),
        ({"history": [5]}, "history.0"),
    ],
)
def test_extreme_values_and_loose_json_types_are_422_naming_the_field(client, body, field):
    answer = client.post("/recall", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and answer.json()["error"].startswith(f"{field}: ")


def test_values_at_the_documented_bound_are_ranked(client):
    from serving.recall.service import MAX_ABS_VALUE

    vector = [MAX_ABS_VALUE, -MAX_ABS_VALUE] * 64
    answer = client.post("/recall", json={"user_vector": vector, "n": 10})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["items"]) == 10 and body["ranked"] is True and "warning" not in body
    scores = [item["score"] for item in body["items"]]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    assert len(set(scores)) > 1  # a ranking, not every item at the bias


class ZeroQueryTower:
    """A user tower that maps everything to a zero query (a dead model): every score = bias."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot

    def embed(self, vectors, version=None, **_):
        from serving.client import UserTowerOutput

        n, d = len(vectors), self.snapshot.embeddings.shape[1]
        zeros = np.zeros((n, d), np.float32)
        bias = np.full((n, 1), self.snapshot.bias, np.float32)
        return UserTowerOutput(zeros, zeros, version, bias)


def test_a_zero_query_says_the_order_is_arbitrary(world):
    from serving.recall import load_snapshot

    tower = ZeroQueryTower(load_snapshot(world["out"], 1))
    service = RecallService(world["out"], tower, timeout_s=TIMEOUT_S)
    service.refresh()
    answer = service.recall(user_vector=[0.1] * 128, n=5)
    assert answer["ranked"] is False and "order is arbitrary" in answer["warning"]
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 5 and scores == pytest.approx([tower.snapshot.bias] * 5)


def test_an_index_that_gives_fewer_rows_than_asked_is_an_error_not_a_short_list(world):
    import dataclasses

    from serving.index import make_index
    from serving.recall import load_snapshot
    from serving.recall.snapshot import ShortListError

    snapshot = load_snapshot(world["out"], 1)
    # an index that lost items: 5 of the catalogue's rows
    partial = make_index("flat").build(snapshot.embeddings[:5], list(snapshot.ids[:5]))
    broken = dataclasses.replace(snapshot, index=partial)
    query = np.ones(snapshot.embeddings.shape[1], np.float32)
    assert len(top_items(broken, query, 0.0, 5, frozenset())) == 5
    with pytest.raises(ShortListError, match="gave 5 of the 10 items"):
        top_items(broken, query, 0.0, 10, frozenset())


def test_ready_turns_503_within_one_poll_when_the_served_version_is_unloaded(
    world, pushed_run, tmp_path
):
    """Version 2 served; its user tower is unloaded from the model server: /health/ready is
    503 (saying why) by the next poll while /health/live stays 200; once version 1 is loaded
    the watcher moves to it — index, embeddings and tower all of version 1 — and ready is 200."""
    poll_s = 0.2
    out = copy_run(pushed_run, tmp_path)
    run_publisher(out, 1, tmp_path, items=world["items"])
    push_copy(out, 2)
    run_publisher(out, 2, tmp_path, items=world["items"])
    served = tmp_path / "model_server"
    for name in ("item_tower", "user_tower"):
        shutil.copytree(out / "serving" / name / "2", served / name / "2")
    write_models_config(str(served))
    with ModelServer(served / "models.config", tmp_path / "ms.log") as server:
        server.start(2)
        tower = UserTowerClient(server.target, timeout_s=TIMEOUT_S, retries=0)
        service = RecallService(out, tower, poll_s=poll_s, timeout_s=TIMEOUT_S)
        body = {"user_vector": [0.05] * 128, "n": 5}
        with TestClient(create_app(service)) as http:
            wait_for(lambda: http.get("/health/ready").status_code == 200, 60, "not ready")
            assert http.get("/health/ready").json()["version"] == 2
            assert http.post("/recall", json=body).json()["version"] == 2

            (served / "user_tower" / "2").rename(served / "user_tower" / ".unloaded-2")
            wait_for(lambda: tower.model_status().get(2) != "AVAILABLE", 30, "2 not unloaded")
            unloaded = time.monotonic()
            wait_for(lambda: http.get("/health/ready").status_code == 503, 10, "still ready")
            assert time.monotonic() - unloaded < poll_s + 1.0  # one poll, a loaded machine's slack
            ready = http.get("/health/ready")
            assert "version 2 stopped answering" in ready.json()["reason"]
            assert server.target not in ready.text  # addresses go to the log, not to clients
            assert http.get("/health").status_code == 503  # the alias says the same
            assert http.get("/health/live").status_code == 200
            refused = http.post("/recall", json=body)
            assert refused.status_code == 503 and server.target not in refused.text

            staging = served / "user_tower" / ".tmp-1"
            shutil.copytree(out / "serving" / "user_tower" / "1", staging)
            staging.rename(served / "user_tower" / "1")
            wait_for(lambda: http.get("/health/ready").status_code == 200, 90, "no move to 1")
            health = http.get("/health/ready").json()
            assert health["versions"] == {"user_tower": 1, "item_embeddings": 1, "store": None}
            assert http.post("/recall", json=body).json()["version"] == 1
        tower.close()


def test_the_api_key_comes_from_a_file_or_the_environment_never_argv(tmp_path, monkeypatch):
    from serving.recall import __main__ as cli

    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv(cli.API_KEY_ENV, "from-env")
    assert cli._api_key(str(key_file)) == "from-file"
    assert cli._api_key(None) == "from-env"
    with pytest.raises(SystemExit, match="holds a password"):
        cli._redis_url("redis://:hunter2@127.0.0.1:6379/0")
    with pytest.raises(SystemExit):
        cli.main(["--serving_dir", "s", "--output_dir", "o", "--api_key", "k"])  # no such flag
