"""The Redis item store against a real redis-server: round trip, atomic switch, keep and
rollback, publishes that die half-way, outages."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import redis
import torch
from redis_server import RedisServer, redis_server_path
from typer.testing import CliRunner

import finetower.cli.store  # noqa: F401  (registers publish, rollback)
from finetower.cli.app import app
from finetower.errors import DataError, FinetowerError
from finetower.model import TwoTowerModel
from finetower.recall import build_item_index
from finetower.runs import save_run
from finetower.store import (
    Keys,
    StoreError,
    StoreReader,
    StoreUnavailable,
    VersionNotFound,
    load_index_catalog,
    publish,
    rollback,
)
from finetower.vectors import Vectors, write_vectors

pytestmark = pytest.mark.skipif(
    redis_server_path() is None, reason="redis-server is not on PATH (apt-get install redis-server)"
)


@pytest.fixture
def server(tmp_path):
    with RedisServer(tmp_path / "redis") as running:
        yield running


def catalogue(n: int, value: float | None = None, seed: int = 0):
    """ids, embeddings [n, 8], pretrained vectors [n, 12]; all `value` when given."""
    rng = np.random.default_rng(seed)
    ids = [f"item-{i}" for i in range(n)]
    if value is not None:
        return ids, np.full((n, 8), value, np.float32), np.full((n, 12), value, np.float32)
    return (
        ids,
        rng.normal(size=(n, 8)).astype(np.float32),
        rng.normal(size=(n, 12)).astype(np.float32),
    )


def namespace_keys(url: str, version: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    return list(client.scan_iter(match=f"{Keys.namespace(version)}*", count=1000))


def test_publish_then_load_returns_the_exact_float32_bytes(server):
    ids, embeddings, vectors = catalogue(2500)
    ids[7] = 'naïve id with spaces, "quotes" and\nnewline'
    users = (["alice", "bob"], np.arange(24, dtype=np.float32).reshape(2, 12))
    report = publish(
        server.url, "abc123", ids, embeddings, vectors, -1.25, users, batch=1000
    )  # 3 chunks, the last one partial
    assert report.items == 2500 and report.users == 2 and report.previous is None
    with StoreReader(server.url) as reader:
        assert reader.current_version() == report.version
        loaded = reader.load()
        assert loaded.ids == ids
        assert loaded.item_embeddings.tobytes() == embeddings.tobytes()
        assert loaded.item_vectors.tobytes() == vectors.tobytes()
        assert loaded.bias == -1.25 and loaded.manifest["model"] == "abc123"
        assert loaded.manifest["tables"]["items"]["columns"] == {"embeddings": 8, "vectors": 12}

        found = reader.item_vectors_for([ids[7], "nope", "item-2499", ids[7]])
        assert found.ids == [ids[7], "item-2499", ids[7]] and found.unknown == ["nope"]
        assert found.vectors.tobytes() == vectors[[7, 2499, 7]].tobytes()
        assert reader.user_vector("bob").tobytes() == users[1][1].tobytes()
        assert reader.user_vector("carol") is None


def test_bad_input_is_refused_before_anything_is_written(server):
    ids, embeddings, vectors = catalogue(10)
    with pytest.raises(DataError, match="duplicate"):
        publish(server.url, "m", [*ids[:-1], ids[0]], embeddings, vectors, 0.0)
    with pytest.raises(DataError, match=r"item vectors has shape \(9, 12\)"):
        publish(server.url, "m", ids, embeddings, vectors[:9], 0.0)
    embeddings[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        publish(server.url, "m", ids, embeddings, vectors, 0.0)
    with pytest.raises(DataError, match="fingerprint"):
        publish(server.url, "m*", ids, vectors[:, :8], vectors, 0.0)
    with pytest.raises(DataError, match="no items"):
        publish(server.url, "m", [], embeddings[:0], vectors[:0], 0.0)
    with pytest.raises(StoreError, match="bad Redis URL"):
        StoreReader("http://127.0.0.1/")
    assert redis.Redis.from_url(server.url).dbsize() == 0


def test_readers_only_ever_see_whole_versions_while_publishes_switch(server):
    """Version k has every embedding equal to k: a load mixing two versions would show it."""
    n, seen, errors, gone = 3000, [], [], []
    done = threading.Event()

    def check(loaded) -> float:
        value = float(loaded.manifest["source"]["value"])
        assert loaded.ids == [f"item-{i}" for i in range(n)]
        assert (loaded.item_embeddings == value).all() and (loaded.item_vectors == value).all()
        return value

    def read_loop() -> None:
        with StoreReader(server.url) as reader:
            for _ in range(100_000):  # bounded; ends when the publishes are done
                if done.is_set():
                    return
                try:
                    version = reader.current_version()
                    if version is not None:
                        seen.append(check(reader.load(version)))
                except VersionNotFound:
                    gone.append(1)  # pruned while read: reported, never mixed
                except Exception as error:  # noqa: BLE001 - handed to the main thread
                    errors.append(error)
                    return

    publish(server.url, "m", *catalogue(n, 0.0), 0.0, source={"value": 0})
    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        with StoreReader(server.url) as reader:
            for k in range(1, 6):
                # while version k is written, `current` is still k-1, whole and readable
                def during(table, written, total, k=k, reader=reader):
                    assert check(reader.load()) == k - 1

                publish(
                    server.url, "m", *catalogue(n, float(k)), 0.0,
                    keep=1, batch=250, source={"value": k}, progress=during,
                )  # fmt: skip
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert seen and set(seen) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


def test_keep_deletes_older_versions_and_rollback_switches_back(server):
    versions = [
        publish(server.url, f"model{k}", *catalogue(50, float(k)), 0.0, keep=2).version
        for k in range(4)
    ]
    with StoreReader(server.url) as reader:
        assert reader.versions() == versions[::-1][:3]  # current + 2 kept
        assert namespace_keys(server.url, versions[0]) == []

        assert rollback(server.url) == {"previous": versions[3], "current": versions[2]}
        assert reader.current_version() == versions[2]
        assert (reader.load().item_embeddings == 2.0).all()
        rollback(server.url, to="model1")  # a fingerprint names its newest kept version
        assert reader.current_version() == versions[1]
        with pytest.raises(VersionNotFound, match="nothing to roll back to"):
            rollback(server.url)
        with pytest.raises(VersionNotFound, match="not a kept version"):
            rollback(server.url, to="model0")
        rollback(server.url, to=versions[3])
        assert reader.current_version() == versions[3]


def test_a_failure_after_batch_k_leaves_current_untouched_and_cleans_up(server):
    before = publish(server.url, "old", *catalogue(100, 1.0), 0.0).version

    def fail_after_two_batches(table, written, total):
        if written >= 20:
            raise RuntimeError("injected failure after batch 2")

    with pytest.raises(RuntimeError, match="injected"):
        publish(server.url, "new", *catalogue(100, 2.0), 0.0, batch=10,
                progress=fail_after_two_batches)  # fmt: skip
    client = redis.Redis.from_url(server.url)
    assert client.smembers(Keys.pending) == set()
    assert client.keys("finetower:v:new*") == []  # small test db: KEYS is fine here
    with StoreReader(server.url) as reader:
        assert reader.current_version() == before
        assert (reader.load().item_embeddings == 1.0).all()


KILLED_PUBLISH = """
import sys
import numpy as np
from finetower.store import publish

def pause(table, written, total):
    if written == 30:  # three batches written: say so, then wait to be killed
        print("written", flush=True)
        sys.stdin.readline()

n = 100
publish(sys.argv[1], "killed", [f"item-{i}" for i in range(n)], np.zeros((n, 8), np.float32),
        np.zeros((n, 12), np.float32), 0.0, batch=10, progress=pause)
"""


def test_publish_killed_mid_way_leaves_current_and_the_next_publish_cleans_it(server, tmp_path):
    before = publish(server.url, "old", *catalogue(100, 1.0), 0.0).version
    script = tmp_path / "killed_publish.py"
    script.write_text(KILLED_PUBLISH)
    child = subprocess.Popen(
        [sys.executable, str(script), server.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "written\n"  # EOF instead if the child failed
        client = redis.Redis.from_url(server.url)
        (half,) = [v.decode() for v in client.smembers(Keys.pending)]
        assert namespace_keys(server.url, half)
        owner = client.get(Keys.lease(half)).decode()
    finally:
        child.kill()  # SIGKILL: no cleanup of its own
        child.wait(timeout=30)
    for _ in range(10_000):  # redis notices the closed connection: a few round trips at most
        if not client.client_list(client_id=[owner]):
            break
    with StoreReader(server.url) as reader:
        assert reader.current_version() == before
        assert (reader.load().item_embeddings == 1.0).all()
    report = publish(server.url, "next", *catalogue(100, 3.0), 0.0)
    assert report.cleaned == [half] and report.previous == before
    assert namespace_keys(server.url, half) == []
    assert client.smembers(Keys.pending) == set()


def test_a_live_publish_is_not_taken_for_dead(server):
    """A publish that starts while another is writing leaves the other's namespace alone."""
    inner = []

    def publish_meanwhile(table, written, total):
        if not inner:
            inner.append(publish(server.url, "second", *catalogue(40, 2.0), 0.0))

    first = publish(server.url, "first", *catalogue(40, 1.0), 0.0, batch=10,
                    progress=publish_meanwhile)  # fmt: skip
    assert inner[0].cleaned == [] and first.previous == inner[0].version
    with StoreReader(server.url) as reader:
        assert reader.current_version() == first.version
        assert (reader.load().item_embeddings == 1.0).all()


def test_redis_down_or_hung_fails_fast_and_recovers(server):
    publish(server.url, "m", *catalogue(10, 1.0), 0.0)
    reader = StoreReader(server.url)
    assert reader.current_version() is not None

    server.pause()  # accepts connections, answers nothing: only the read timeout ends a call
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            reader.item_vectors_for(["item-1"])
        assert time.monotonic() - started < 2.0  # 1 s read timeout, no retries
    finally:
        server.resume()

    server.stop()
    for call in (reader.current_version, reader.load, lambda: publish(
            server.url, "m", *catalogue(10, 1.0), 0.0)):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < 2.0
    assert issubclass(StoreUnavailable, StoreError) and issubclass(StoreError, FinetowerError)
    secret = server.url.replace("redis://", "redis://:s3cret@")
    with pytest.raises(StoreUnavailable) as refused:
        StoreReader(secret).current_version()
    assert "s3cret" not in str(refused.value) and "redis://***@" in str(refused.value)

    server.start()  # same port, empty (no persistence): the same reader works again
    assert reader.current_version() is None
    with pytest.raises(VersionNotFound, match="nothing is published"):
        reader.load()
    version = publish(server.url, "m", *catalogue(10, 4.0), 0.0).version
    assert reader.current_version() == version
    assert (reader.item_vectors_for(["item-3"]).vectors == 4.0).all()
    reader.close()


@pytest.fixture
def index_dir(tmp_path):
    rng = np.random.default_rng(0)
    items = Vectors(rng.normal(size=(300, 128)).astype(np.float32), [f"m{i}" for i in range(300)])
    write_vectors(tmp_path / "items.txt", items)
    torch.manual_seed(0)
    save_run(tmp_path / "run", TwoTowerModel())
    build_item_index(tmp_path / "run", tmp_path / "items.txt", tmp_path / "index")
    return tmp_path / "index"


def test_cli_publish_and_rollback(server, index_dir):
    catalog = load_index_catalog(index_dir)
    runner = CliRunner()
    first = runner.invoke(app, ["publish", str(index_dir), "--redis", server.url, "--json"])
    assert first.exit_code == 0, first.output
    first = json.loads(first.stdout)
    assert first["items"] == 300 and first["model"] == catalog.fingerprint
    second = runner.invoke(app, ["publish", str(index_dir), "--redis", server.url, "--keep", "1"])
    assert second.exit_code == 0 and "300 items" in second.stdout
    with StoreReader(server.url) as reader:
        loaded = reader.load()
        assert loaded.ids == catalog.ids and loaded.bias == pytest.approx(catalog.bias)
        np.testing.assert_array_equal(loaded.item_embeddings, catalog.item_embeddings)
        assert loaded.manifest["source"]["backend"] == "flat"
        back = runner.invoke(app, ["rollback", "--redis", server.url, "--json"])
        assert back.exit_code == 0, back.output
        assert json.loads(back.stdout)["current"] == first["version"] == reader.current_version()
    refused = runner.invoke(app, ["rollback", "--redis", server.url])
    assert refused.exit_code == 2 and "nothing to roll back to" in refused.output
    down = runner.invoke(app, ["rollback", "--redis", "redis://127.0.0.1:1/0"])
    assert down.exit_code == 2 and "unreachable" in down.output
