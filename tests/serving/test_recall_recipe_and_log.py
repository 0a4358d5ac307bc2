"""The recall service builds user vectors with the served version's recipe (issue 21, point 6)
and logs a sample of them (point 4). Real parts: the local model server as a subprocess, the
EmbeddingsPublisher's index, and for the log the service itself under uvicorn
(`python -m serving.recall --serving_log DIR`) answering real HTTP requests."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from components.common.serving_log import column_names, log_files
from serving.client import UserTowerClient
from serving.recall import RecallService, create_app
from serving.store import clear_pin, write_pin
from tests.components.embeddings_publisher.test_embeddings_publisher import (
    push_copy,
    run_publisher,
)
from tests.redis_server import free_port
from tests.serving.test_recall_service import REPO, ModelServer, prepare_output, wait_for

TIMEOUT_S = 2.0
HISTORY = 8  # ids per history: longer than both versions' N


@pytest.fixture(scope="module")
def world(pushed_run, tmp_path_factory):
    """Version 1 published with the recipe's N (5), version 2 (the same towers) with N = 2."""
    root = tmp_path_factory.mktemp("recipe")
    prepared = prepare_output(pushed_run, root)
    out = prepared["out"]
    push_copy(out, 2)
    run_publisher(out, 2, root, items=prepared["items"], recipe={"user_vector_last_n": 2})
    vectors = {v: np.load(out / "ann_index" / str(v) / "item_vectors.npy") for v in (1, 2)}
    ids = {v: json.loads((out / "ann_index" / str(v) / "ids.json").read_text()) for v in (1, 2)}
    with ModelServer(out / "serving" / "models.config", root / "ms.log") as server:
        server.start(1, 2)
        yield {**prepared, "server": server, "vectors": vectors, "ids": ids}


def history_vector(world, version: int, history: list[str], last_n: int) -> np.ndarray:
    row = {item: r for r, item in enumerate(world["ids"][version])}
    return world["vectors"][version][[row[i] for i in history[-last_n:]]].mean(axis=0)


def same_answer(client, history: list[str], vector: np.ndarray) -> bool:
    by_history = client.post("/recall", json={"history": history, "n": 20}).json()
    by_vector = client.post("/recall", json={"user_vector": vector.tolist(), "n": 20}).json()
    assert by_history["version"] == by_vector["version"]
    scores = np.array([i["score"] for i in by_history["items"]])
    want = np.array([i["score"] for i in by_vector["items"]])
    return [i["item_id"] for i in by_history["items"]] == [
        i["item_id"] for i in by_vector["items"]
    ] and np.allclose(scores, want, rtol=1e-5, atol=1e-5)


def test_histories_follow_the_served_versions_recipe(world, caplog):
    history = world["ids"][1][20 : 20 + HISTORY]
    tower = UserTowerClient(world["server"].target, timeout_s=TIMEOUT_S, retries=0)
    service = RecallService(
        world["out"],
        tower,
        serving_dir=world["out"] / "serving",
        last_n=4,  # disagrees with both versions: each version's own recipe is used
        poll_s=0.1,
        timeout_s=TIMEOUT_S,
    )
    caplog.set_level(logging.INFO, logger="serving.recall")
    try:
        with TestClient(create_app(service)) as client:
            wait_for(lambda: client.get("/health").json()["version"] == 2, 60, "version 2")
            assert client.get("/health").json()["user_vector_recipe"]["last_n"] == 2
            assert same_answer(client, history, history_vector(world, 2, history, 2))
            assert not same_answer(client, history, history_vector(world, 2, history, 4))
            # a rollback to version 1 swaps its recipe in with its items: the last 5 again
            write_pin(world["out"] / "serving", 1)
            wait_for(lambda: client.get("/health").json()["version"] == 1, 60, "version 1")
            assert client.get("/health").json()["user_vector_recipe"]["last_n"] == 5
            assert same_answer(client, history, history_vector(world, 1, history, 5))
    finally:
        clear_pin(world["out"] / "serving")
        tower.close()
    disagreements = [
        r.getMessage() for r in caplog.records if "--history_last_n 4" in r.getMessage()
    ]
    assert any("version 2, trained on the mean of the last 2 items" in m for m in disagreements)
    assert any("version 1, trained on the mean of the last 5 items" in m for m in disagreements)


def test_the_service_under_uvicorn_logs_the_user_vectors_it_built(world, tmp_path):
    log_dir, port = tmp_path / "serving-log", free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.recall",
            "--serving_dir",
            str(world["out"] / "serving"),
            "--output_dir",
            str(world["out"]),
            "--tf_serving",
            world["server"].target,
            "--port",
            str(port),
            "--poll_s",
            "0.2",
            "--serving_log",
            str(log_dir),
            "--serving_log_rate",
            "1",
            "--serving_log_rows_per_file",
            "3",
            "--serving_log_flush_s",
            "0.5",
            "--log_level",
            "warning",
        ],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=(tmp_path / "recall.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError((tmp_path / "recall.log").read_text()[-3000:])
        try:
            return http.get("/health").json().get("version") == 2
        except (httpx.TransportError, ValueError):
            return False

    try:
        wait_for(ready, 120, "the recall service does not serve version 2")
        histories = [world["ids"][2][start : start + HISTORY] for start in (0, 30, 60)]
        expected = [history_vector(world, 2, h, 2) for h in histories]
        for history in histories:
            assert http.post("/recall", json={"history": history}).status_code == 200
        given = np.linspace(-0.5, 0.5, 128, dtype=np.float32)
        assert http.post("/recall", json={"user_vector": given.tolist()}).status_code == 200
        expected.append(given)
        # 4 rows: one whole file of 3, then one of 1 written by its deadline
        wait_for(lambda: len(log_files(log_dir)) == 2, 30, "two log files")
        rows = []
        for path in log_files(log_dir):
            assert path.name.endswith("-v2.csv")
            with path.open() as f:
                reader = csv.reader(f)
                assert next(reader) == column_names(128)
                rows += [[float(v) for v in row] for row in reader]
        np.testing.assert_allclose(np.array(rows), np.stack(expected), rtol=1e-6, atol=1e-7)
        metrics = http.get("/metrics").text
        assert 'finetower_recall_serving_log_rows_total{state="written"} 4.0' in metrics
        assert 'finetower_recall_serving_log_rows_total{state="dropped"} 0.0' in metrics
    finally:
        http.close()
        process.terminate()
        process.wait(timeout=30)
