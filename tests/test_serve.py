"""The recall service over a real uvicorn server (and a real redis-server): answers equal
`Recaller` and `finetower recall`, versions switch under load without a failed request,
Redis outages fail fast and heal, bad requests are refused by field."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from redis_server import RedisServer, redis_server_path
from typer.testing import CliRunner

import finetower.cli.retrieval  # noqa: F401  (registers recall)
from finetower.cli.app import app as cli
from finetower.errors import ArtifactError
from finetower.generate import write_generated_text
from finetower.model import ModelConfig, TwoTowerModel
from finetower.recall import Recaller, build_item_index
from finetower.runs import save_run
from finetower.serve import MAX_HISTORY, MAX_K, create_app
from finetower.store import load_index_catalog, publish
from finetower.train import TrainConfig, train
from finetower.vectors import Vectors, write_vectors

N_ITEMS = 400
DEADLINE_S = 30.0
needs_redis = pytest.mark.skipif(
    redis_server_path() is None, reason="redis-server is not on PATH (apt-get install redis-server)"
)


def until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> object:
    """Poll `condition` until it returns something truthy; fail after the deadline."""
    tick, end = threading.Event(), time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        tick.wait(0.02)  # a polling pace, not a synchronisation
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


class LiveServer:
    """The app under uvicorn in a thread, on a socket bound here (no free-port race)."""

    def __init__(self, app, headers: dict[str, str] | None = None) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]})
        self.client = httpx.Client(base_url=self.url, headers=headers or {}, timeout=10.0)

    def answers(self) -> httpx.Response | None:
        assert self.thread.is_alive(), "uvicorn exited"
        try:
            return self.client.get("/health")
        except httpx.TransportError:
            return None

    def health(self) -> dict:
        return self.client.get("/health").json()

    def __enter__(self) -> LiveServer:
        self.thread.start()
        until(self.answers, "the server to answer /health")
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny trained models (A, B) over one catalogue, each with a flat index; users."""
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    items = Vectors((rng.normal(size=(N_ITEMS, 128)) / 4).astype(np.float32),
                    [f"m{i}" for i in range(N_ITEMS)])  # fmt: skip
    write_vectors(root / "items.txt", items)
    users = Vectors(rng.normal(size=(3, 128)).astype(np.float32) / 4, ["ann", "bob", "cy"])
    write_vectors(root / "users.txt", users)
    samples = write_generated_text(root / "train.txt", 2000, seed=3)
    runs, fingerprints = {}, {}
    for name, seed in (("a", 0), ("b", 1)):
        config = TrainConfig(epochs=1, batch_size=256, seed=seed, text_mode="stream")
        result = train(samples, root / "runs" / name, config=config, tower=(16,), progress=False)
        runs[name], fingerprints[name] = result.run_dir, result.fingerprint
        build_item_index(result.run_dir, root / "items.txt", root / "indexes" / name)
    torch.manual_seed(7)  # a third model that no service can find
    save_run(root / "runs" / "c", TwoTowerModel(ModelConfig(tower=(16,))))
    build_item_index(root / "runs" / "c", root / "items.txt", root / "lost" / "c")
    assert len(set(fingerprints.values())) == 2
    return {"root": root, "runs": runs, "fp": fingerprints, "items": items, "users": users}


def index_dir(world, name: str) -> Path:
    return world["root"] / "indexes" / name


def published(url: str, index: Path, users: Vectors | None = None):
    catalog = load_index_catalog(index)
    return publish(
        url, catalog.fingerprint, catalog.ids, catalog.item_embeddings, catalog.item_vectors,
        catalog.bias, (users.ids, users.vectors) if users else None, source=catalog.source,
    )  # fmt: skip


def recall(server: LiveServer, **body) -> dict:
    response = server.client.post("/recall", json=body)
    assert response.status_code == 200, response.text
    return response.json()


HISTORIES = [["m1", "m5", "m9"], ["m10", "nope", "m399", "m10"], [f"m{i}" for i in range(0, 80, 3)]]


def test_local_service_answers_like_recaller_and_the_cli(world):
    a = index_dir(world, "a")
    recaller = Recaller(a, user_vectors=world["root"] / "users.txt")
    with LiveServer(create_app(a, user_vectors=world["root"] / "users.txt")) as server:
        assert server.health()["ready"] and server.health()["model"] == world["fp"]["a"]
        for history in HISTORIES:
            for exclude in (False, True):
                got = recall(server, history=history, k=25, exclude_seen=exclude)
                want = recaller.for_history(history, 25, exclude_seen=exclude)
                assert got["items"] == want["items"] and got["model"] == want["model"]
                assert got["unknown_history"] == want["unknown_history"]
        cli_run = CliRunner().invoke(
            cli, ["recall", str(a), "--history", "m10,nope,m399,m10", "--k", "25", "--json"]
        )
        assert cli_run.exit_code == 0, cli_run.output
        assert (
            recall(server, history=HISTORIES[1], k=25)["items"]
            == json.loads(cli_run.stdout)["items"]
        )
        vector = world["users"].vectors[1]
        got = recall(server, user_vector=vector.tolist(), k=7)
        assert got["items"] == recaller.for_user_vector(vector, 7)["items"]
        assert recall(server, user_id="cy", k=7)["items"] == recaller.for_user("cy", 7)["items"]
        assert recall(server, history=[5, "m9"], k=3)["unknown_history"] == 1  # 5 -> "5"


@needs_redis
@pytest.mark.parametrize("history_vectors", ["store", "memory"])
def test_redis_service_answers_like_recaller_and_names_the_version(
    world, tmp_path, history_vectors
):
    with RedisServer(tmp_path / "redis") as redis_server:
        report = published(redis_server.url, index_dir(world, "a"), world["users"])
        app = create_app(index_dir(world, "a"), redis_server.url, poll_interval_s=0.05,
                         history_vectors=history_vectors)  # fmt: skip
        with LiveServer(app) as server:
            health = until(lambda: server.health()["ready"] and server.health(), "ready")
            assert health["version"] == report.version and health["index"].endswith("a")
            recaller = Recaller(index_dir(world, "a"), user_vectors=world["root"] / "users.txt")
            for history in HISTORIES:
                got = recall(server, history=history, k=30, exclude_seen=True)
                want = recaller.for_history(history, 30, exclude_seen=True)
                assert got["items"] == want["items"] and got["version"] == report.version
                assert got["unknown_history"] == want["unknown_history"]
            got = recall(server, user_id="bob", k=5)
            assert got["items"] == recaller.for_user("bob", 5)["items"]
            missing = server.client.post("/recall", json={"user_id": "zed"})
            assert missing.status_code == 404 and missing.json()["field"] == "user_id"


@needs_redis
def test_a_published_version_switches_in_under_load_without_a_failed_request(world, tmp_path):
    """B's run sits under --models without an index: the service builds B's index itself."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "b").symlink_to(world["runs"]["b"], target_is_directory=True)
    fa, fb = world["fp"]["a"], world["fp"]["b"]
    with RedisServer(tmp_path / "redis") as redis_server:
        published(redis_server.url, index_dir(world, "a"))
        app = create_app(index_dir(world, "a"), redis_server.url, models_dir=models,
                         poll_interval_s=0.05)  # fmt: skip
        with LiveServer(app) as server:
            until(lambda: server.health()["model"] == fa, "model A")
            answers: list[tuple[int, str | None]] = []
            stop, errors = threading.Event(), []

            def client_loop(seed: int) -> None:
                rng = np.random.default_rng(seed)
                with httpx.Client(base_url=server.url, timeout=10.0) as client:
                    for _ in range(3000):  # bounded; ends once the main thread has seen B
                        if stop.is_set():
                            return
                        history = [f"m{i}" for i in rng.integers(0, N_ITEMS, 4)]
                        try:
                            response = client.post("/recall", json={"history": history, "k": 20})
                            answers.append((response.status_code, response.json().get("model")))
                        except Exception as error:  # noqa: BLE001 - reported below
                            errors.append(error)

            clients = [threading.Thread(target=client_loop, args=(s,)) for s in range(4)]
            for thread in clients:
                thread.start()
            try:
                until(lambda: len(answers) >= 20, "requests before the switch")
                report = published(redis_server.url, index_dir(world, "b"))
                until(lambda: any(model == fb for _, model in answers), "answers from B")
                seen_b = sum(model == fb for _, model in answers)
                until(lambda: sum(m == fb for _, m in answers) >= seen_b + 20, "more from B")
            finally:
                stop.set()
                for thread in clients:
                    thread.join(timeout=30)
            assert not errors, errors[:3]
            assert {status for status, _ in answers} == {200}
            assert {model for _, model in answers} == {fa, fb}
            first_b = [model for _, model in answers].index(fb)
            assert len(answers) - first_b >= 20 and answers[-1][1] == fb
            health = server.health()
            assert health["model"] == fb and health["version"] == report.version
            assert health["index"].startswith("built from store")
            # the index built from the store ranks like B's own index directory
            want = Recaller(index_dir(world, "b")).for_history(HISTORIES[2], 40)
            assert recall(server, history=HISTORIES[2], k=40)["items"] == want["items"]

            # a version whose model the service cannot find is refused; B keeps serving
            lost = published(redis_server.url, world["root"] / "lost" / "c")
            health = until(lambda: server.health()["problem"] and server.health(), "refusal")
            assert health["ready"] and health["model"] == fb and health["current"] == lost.version
            assert "is not found" in health["problem"] and lost.model in health["problem"]
            assert recall(server, history=HISTORIES[0])["model"] == fb


@needs_redis
def test_redis_down_fails_fast_reports_unready_and_heals(world, tmp_path):
    with RedisServer(tmp_path / "redis") as redis_server:
        published(redis_server.url, index_dir(world, "a"))
        app = create_app(index_dir(world, "a"), redis_server.url, poll_interval_s=0.05)
        with LiveServer(app) as server:
            until(lambda: server.health()["ready"], "ready")
            vector = world["users"].vectors[0].tolist()

            redis_server.pause()  # hung: only the 1 s read timeout ends a lookup
            try:
                started = time.monotonic()
                response = server.client.post("/recall", json={"history": ["m1"]})
                assert response.status_code == 503 and time.monotonic() - started < 2.5
                assert "unreachable" in response.json()["error"]
                until(lambda: server.client.get("/health").status_code == 503, "unready")
                assert recall(server, user_vector=vector)["items"]  # needs no Redis
            finally:
                redis_server.resume()
            until(lambda: server.health()["ready"], "ready after resume")
            assert recall(server, history=["m1"])["items"]

            redis_server.stop()  # refused: fails at once
            started = time.monotonic()
            response = server.client.post("/recall", json={"history": ["m1"]})
            assert response.status_code == 503 and time.monotonic() - started < 1.0
            down = until(lambda: not server.health()["ready"] and server.health(), "unready")
            assert down["redis"] == "unreachable" and "unreachable" in down["reason"]
            assert recall(server, user_vector=vector)["items"]

            redis_server.start()  # back, empty (no persistence): ready once republished
            until(lambda: server.health()["redis"] == "ok", "Redis seen again")
            assert not server.health()["ready"]
            report = published(redis_server.url, index_dir(world, "a"))
            until(lambda: server.health()["version"] == report.version, "the republished version")
            assert server.health()["ready"] and recall(server, history=["m1"])["items"]


def test_bad_requests_are_refused_by_field_and_the_key_is_required(world):
    key = "s3cret-key"
    app = create_app(index_dir(world, "a"), api_key=key, max_body_bytes=64 * 1024)
    with LiveServer(app, headers={"X-API-Key": key}) as server:
        bare = httpx.Client(base_url=server.url, timeout=10.0)
        for path in ("/health", "/metrics"):
            assert bare.get(path).status_code == 401
        assert bare.post("/recall", json={"history": ["m1"]}).status_code == 401
        wrong = bare.post("/recall", json={"history": ["m1"]}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        bearer = bare.post("/recall", json={"history": ["m1"]},
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert bearer.status_code == 200
        bare.close()

        def refused(body, status: int = 422, content: bytes | None = None) -> str:
            if content is None:
                response = server.client.post("/recall", json=body)
            else:
                response = server.client.post(
                    "/recall", content=content, headers={"content-type": "application/json"}
                )
            assert response.status_code == status, response.text
            return response.json()["error"]

        assert refused(None, 400, b'{"history": ["m1",').startswith("body: malformed JSON")
        assert refused({"history": ["m1"], "k": 0}).startswith("k: ")
        assert refused({"history": ["m1"], "k": MAX_K + 1}).startswith("k: ")
        assert refused({"history": ["m1"], "k": "many"}).startswith("k: ")
        assert refused({"user_vector": [0.5] * 5}).startswith("user_vector: has 5 values")
        assert refused(None, content=b'{"user_vector": [NaN]}').startswith("user_vector.0: ")
        assert refused({"history": ["nope", "nada"]}).startswith("history: none of the 2")
        assert refused({"history": []}).startswith("history: ")
        assert refused({"history": ["m1"] * (MAX_HISTORY + 1)}).startswith("history: ")
        assert refused({"history": ["x" * 300]}).startswith("history.0: ")
        assert "exactly one of history, user_vector, user_id" in refused(
            {"history": ["m1"], "user_vector": [0.1]}
        )
        assert "exclude_seen applies to history" in refused(
            {"user_id": "ann", "exclude_seen": True}
        )
        assert refused({"history": ["m1"], "kk": 3}).startswith("kk: ")
        assert refused({"user_id": "ann"}).startswith("user_id: lookups need user vectors")
        assert refused(None, 413, json.dumps({"history": ["m1"] * 12000}).encode()).startswith(
            "body: larger than"
        )

        metrics = server.client.get("/metrics").text
        assert 'finetower_requests_total{route="/recall",status="422"}' in metrics
        assert 'finetower_requests_total{route="/recall",status="401"} 2' in metrics
        assert 'finetower_request_seconds_bucket{route="/recall",le="+Inf"}' in metrics
        assert f'finetower_model_info{{model="{world["fp"]["a"]}",version=""}} 1' in metrics
        assert "finetower_ready 1" in metrics


def test_a_wrong_index_directory_is_refused_at_creation(tmp_path):
    with pytest.raises(ArtifactError, match="not a finetower index"):
        create_app(tmp_path)


def test_the_serve_command_binds_loopback_and_answers(world):
    with socket.socket() as probe:  # a free port for the subprocess (it binds it itself)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index = str(index_dir(world, "a"))
    command = [sys.executable, "-m", "finetower.cli", "serve", "--index", index,
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

            def ready():
                assert process.poll() is None, process.stderr.read().decode()
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            until(ready, "`finetower serve` to answer /health", deadline_s=60)
            answer = client.post("/recall", json={"history": ["m1", "m5"], "k": 3}).json()
        assert answer["model"] == world["fp"]["a"] and len(answer["items"]) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)
