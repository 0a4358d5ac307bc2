"""The Redis item store against a real redis-server: round trip, atomic switch, keep and
rollback, publishes that die half-way, outages, publishing an index directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from components.common.errors import ArtifactError, DataError, FinetowerError
from components.common.vectors import Vectors, read_vectors, write_vectors
from serving.index import make_index
from serving.store import (
    Keys,
    StoreError,
    StoreReader,
    StoreUnavailable,
    VersionNotFound,
    catalog_manifest,
    load_index_catalog,
    publish,
    publish_index,
    read_pin,
    rollback,
    unpin,
)

REPO = Path(__file__).resolve().parents[2]


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


def test_publish_then_load_returns_the_exact_float32_bytes(redis_server):
    ids, embeddings, vectors = catalogue(2500)
    ids[7] = 'naïve id with spaces, "quotes" and\nnewline'
    users = (["alice", "bob"], np.arange(24, dtype=np.float32).reshape(2, 12))
    report = publish(
        redis_server.url, "abc123", ids, embeddings, vectors, -1.25, users, batch=1000
    )  # 3 chunks, the last one partial
    assert report.items == 2500 and report.users == 2 and report.previous is None
    with StoreReader(redis_server.url) as reader:
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


def test_bad_input_is_refused_before_anything_is_written(redis_server):
    ids, embeddings, vectors = catalogue(10)
    with pytest.raises(DataError, match="duplicate"):
        publish(redis_server.url, "m", [*ids[:-1], ids[0]], embeddings, vectors, 0.0)
    with pytest.raises(DataError, match=r"item vectors has shape \(9, 12\)"):
        publish(redis_server.url, "m", ids, embeddings, vectors[:9], 0.0)
    embeddings[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        publish(redis_server.url, "m", ids, embeddings, vectors, 0.0)
    with pytest.raises(DataError, match="fingerprint"):
        publish(redis_server.url, "m*", ids, vectors[:, :8], vectors, 0.0)
    with pytest.raises(DataError, match="no items"):
        publish(redis_server.url, "m", [], embeddings[:0], vectors[:0], 0.0)
    with pytest.raises(StoreError, match="bad Redis URL"):
        StoreReader("http://127.0.0.1/")
    assert redis.Redis.from_url(redis_server.url).dbsize() == 0


def test_readers_only_ever_see_whole_versions_while_publishes_switch(redis_server):
    """Version k has every embedding equal to k: a load mixing two versions would show it."""
    n, seen, errors, gone = 3000, [], [], []
    done = threading.Event()

    def check(loaded) -> float:
        value = float(loaded.manifest["source"]["value"])
        assert loaded.ids == [f"item-{i}" for i in range(n)]
        assert (loaded.item_embeddings == value).all() and (loaded.item_vectors == value).all()
        return value

    def read_loop() -> None:
        with StoreReader(redis_server.url) as reader:
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

    publish(redis_server.url, "m", *catalogue(n, 0.0), 0.0, source={"value": 0})
    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        with StoreReader(redis_server.url) as reader:
            for k in range(1, 6):
                # while version k is written, `current` is still k-1, whole and readable
                def during(table, written, total, k=k, reader=reader):
                    assert check(reader.load()) == k - 1

                publish(
                    redis_server.url, "m", *catalogue(n, float(k)), 0.0,
                    keep=1, batch=250, source={"value": k}, progress=during,
                )  # fmt: skip
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert seen and set(seen) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


def test_keep_deletes_older_versions_and_rollback_switches_back(redis_server):
    versions = [
        publish(redis_server.url, f"model{k}", *catalogue(50, float(k)), 0.0, keep=2).version
        for k in range(4)
    ]
    with StoreReader(redis_server.url) as reader:
        assert reader.versions() == versions[::-1][:3]  # current + 2 kept
        assert namespace_keys(redis_server.url, versions[0]) == []

        assert rollback(redis_server.url) == {"previous": versions[3], "current": versions[2]}
        assert reader.current_version() == versions[2]
        assert (reader.load().item_embeddings == 2.0).all()
        rollback(redis_server.url, to="model1")  # a fingerprint names its newest kept version
        assert reader.current_version() == versions[1]
        with pytest.raises(VersionNotFound, match="nothing to roll back to"):
            rollback(redis_server.url)
        with pytest.raises(VersionNotFound, match="not a kept version"):
            rollback(redis_server.url, to="model0")
        rollback(redis_server.url, to=versions[3])
        assert reader.current_version() == versions[3]


def test_a_failure_after_batch_k_leaves_current_untouched_and_cleans_up(redis_server):
    before = publish(redis_server.url, "old", *catalogue(100, 1.0), 0.0).version

    def fail_after_two_batches(table, written, total):
        if written >= 20:
            raise RuntimeError("injected failure after batch 2")

    with pytest.raises(RuntimeError, match="injected"):
        publish(redis_server.url, "new", *catalogue(100, 2.0), 0.0, batch=10,
                progress=fail_after_two_batches)  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    assert client.smembers(Keys.pending) == set()
    assert client.keys("finetower:v:new*") == []  # small test db: KEYS is fine here
    with StoreReader(redis_server.url) as reader:
        assert reader.current_version() == before
        assert (reader.load().item_embeddings == 1.0).all()


KILLED_PUBLISH = """
import sys
import numpy as np
from serving.store import publish

def pause(table, written, total):
    if written == 30:  # three batches written: say so, then wait to be killed
        print("written", flush=True)
        sys.stdin.readline()

n = 100
publish(sys.argv[1], "killed", [f"item-{i}" for i in range(n)], np.zeros((n, 8), np.float32),
        np.zeros((n, 12), np.float32), 0.0, batch=10, progress=pause)
"""


def test_publish_killed_mid_way_leaves_current_and_the_next_publish_cleans_it(
    redis_server, tmp_path
):
    before = publish(redis_server.url, "old", *catalogue(100, 1.0), 0.0).version
    script = tmp_path / "killed_publish.py"
    script.write_text(KILLED_PUBLISH)
    child = subprocess.Popen(
        [sys.executable, str(script), redis_server.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "written\n"  # EOF instead if the child failed
        client = redis.Redis.from_url(redis_server.url)
        (half,) = [v.decode() for v in client.smembers(Keys.pending)]
        assert namespace_keys(redis_server.url, half)
        owner = client.get(Keys.lease(half)).decode()
    finally:
        child.kill()  # SIGKILL: no cleanup of its own
        child.wait(timeout=30)
    for _ in range(10_000):  # redis notices the closed connection: a few round trips at most
        if not client.client_list(client_id=[owner]):
            break
    with StoreReader(redis_server.url) as reader:
        assert reader.current_version() == before
        assert (reader.load().item_embeddings == 1.0).all()
    report = publish(redis_server.url, "next", *catalogue(100, 3.0), 0.0)
    assert report.cleaned == [half] and report.previous == before
    assert namespace_keys(redis_server.url, half) == []
    assert client.smembers(Keys.pending) == set()


def test_a_live_publish_is_not_taken_for_dead_and_the_later_publish_stays_current(
    redis_server,
):
    """A publish that starts while another is writing leaves the other's namespace alone;
    the one that started later stays current: the earlier one ends without switching back."""
    inner = []

    def publish_meanwhile(table, written, total):
        if not inner:
            inner.append(publish(redis_server.url, "second", *catalogue(40, 2.0), 0.0))

    first = publish(redis_server.url, "first", *catalogue(40, 1.0), 0.0, batch=10,
                    progress=publish_meanwhile)  # fmt: skip
    assert inner[0].cleaned == [] and inner[0].committed
    assert not first.committed and first.previous is None
    assert inner[0].version in first.reason and "started later" in first.reason
    assert namespace_keys(redis_server.url, first.version) == []  # the loser cleaned up
    with StoreReader(redis_server.url) as reader:
        assert reader.current_version() == inner[0].version
        assert reader.versions() == [inner[0].version]
        assert (reader.load().item_embeddings == 2.0).all()


RACING_PUBLISH = """
import json, sys
import numpy as np
from serving.store import publish

version, value, n = int(sys.argv[2]), float(sys.argv[3]), 3000
sys.stdin.readline()  # both start writing together
report = publish(sys.argv[1], f"v{version}", [f"item-{i}" for i in range(n)],
                 np.full((n, 8), value, np.float32), np.full((n, 12), value, np.float32),
                 0.0, batch=100)
print(json.dumps(report.to_dict()), flush=True)
"""


def test_racing_publishers_one_wins_and_current_is_the_newest_push(redis_server, tmp_path):
    """Two real publisher processes, pushed versions 5 and 4, released together: `current` is
    version 5's whichever commits last, and the loser says why, exit 0."""
    script = tmp_path / "racing_publish.py"
    script.write_text(RACING_PUBLISH)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):  # different interleavings; every one must end the same way
        redis.Redis.from_url(redis_server.url).flushall()
        children = [
            subprocess.Popen([sys.executable, str(script), redis_server.url, str(v), str(v)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for v in (4, 5)
        ]  # fmt: skip
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = {}
        for version, child in zip((4, 5), children, strict=True):
            out, _ = child.communicate(timeout=120)
            assert child.returncode == 0
            reports[version] = json.loads(out)
        with StoreReader(redis_server.url) as reader:
            current = reader.current_version()
            assert current == reports[5]["version"] and current.startswith("v5-")
            assert (reader.load().item_embeddings == 5.0).all()
        assert reports[5]["committed"]
        if not reports[4]["committed"]:  # 4 committed first and 5 replaced it, or 4 lost
            assert "a push as new or newer" in reports[4]["reason"]
            assert namespace_keys(redis_server.url, reports[4]["version"]) == []


def test_an_older_push_never_replaces_a_newer_one_unless_a_rollback_asks(redis_server):
    url = redis_server.url
    v2 = publish(url, "v2", *catalogue(30, 2.0), 0.0).version
    stale = publish(url, "v1", *catalogue(30, 1.0), 0.0)
    again = publish(url, "v2", *catalogue(30, 2.0), 0.0)
    assert not stale.committed and not again.committed
    assert f"{v2} is current" in stale.reason
    with StoreReader(url) as reader:
        assert reader.current_version() == v2 and reader.versions() == [v2]
    v3 = publish(url, "v3", *catalogue(30, 3.0), 0.0).version
    assert rollback(url, to=2, pin=True) == {"previous": v3, "current": v2}
    pinned = publish(url, "v4", *catalogue(30, 4.0), 0.0)
    assert not pinned.committed and f"pinned to {v2}" in pinned.reason
    with StoreReader(url) as reader:
        assert reader.current_version() == v2
        assert unpin(url) == v2
        v4 = publish(url, "v4", *catalogue(30, 4.0), 0.0)
        assert v4.committed and reader.current_version() == v4.version


def test_rollback_cli_pins_redis_and_the_pin_file_then_unpin_frees_both(redis_server, tmp_path):
    url = redis_server.url
    v1 = publish(url, "v1", *catalogue(30, 1.0), 0.0).version
    publish(url, "v2", *catalogue(30, 2.0), 0.0)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FINETOWER_REDIS_URL": url}
    serving_dir = tmp_path / "serving"
    serving_dir.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "serving.store", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = cli("rollback", "--to", "1", "--serving_dir", str(serving_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["current"] == v1
    assert url not in done.stdout + done.stderr
    assert read_pin(serving_dir) == 1
    assert not publish(url, "v3", *catalogue(30, 3.0), 0.0).committed
    missing = cli("rollback", "--to", "7")
    assert missing.returncode == 1 and "'v7' is not a kept version" in missing.stderr
    assert cli("unpin", "--serving_dir", str(serving_dir)).returncode == 0
    assert read_pin(serving_dir) is None
    assert publish(url, "v3", *catalogue(30, 3.0), 0.0).committed


def test_redis_down_or_hung_fails_fast_and_recovers(redis_server):
    publish(redis_server.url, "m", *catalogue(10, 1.0), 0.0)
    reader = StoreReader(redis_server.url)
    assert reader.current_version() is not None

    redis_server.pause()  # accepts connections, answers nothing: only the read timeout ends a call
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            reader.item_vectors_for(["item-1"])
        assert time.monotonic() - started < 2.0  # 1 s read timeout, no retries
    finally:
        redis_server.resume()

    redis_server.stop()
    for call in (reader.current_version, reader.load, lambda: publish(
            redis_server.url, "m", *catalogue(10, 1.0), 0.0)):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < 2.0
    assert issubclass(StoreUnavailable, StoreError) and issubclass(StoreError, FinetowerError)
    secret = redis_server.url.replace("redis://", "redis://:s3cret@")
    with pytest.raises(StoreUnavailable) as refused:
        StoreReader(secret).current_version()
    assert "s3cret" not in str(refused.value) and "redis://***@" in str(refused.value)

    redis_server.start()  # same port, empty (no persistence): the same reader works again
    assert reader.current_version() is None
    with pytest.raises(VersionNotFound, match="nothing is published"):
        reader.load()
    version = publish(redis_server.url, "m", *catalogue(10, 4.0), 0.0).version
    assert reader.current_version() == version
    assert (reader.item_vectors_for(["item-3"]).vectors == 4.0).all()
    reader.close()


@pytest.fixture
def index_dir(tmp_path):
    """A flat index of seeded item embeddings [300, 16], publishable: its manifest records
    the model, the output bias and the pretrained item vector file [300, 128]."""
    rng = np.random.default_rng(0)
    ids = [f"m{i}" for i in range(300)]
    write_vectors(
        tmp_path / "items.txt", Vectors(rng.normal(size=(300, 128)).astype(np.float32), ids)
    )
    embeddings = rng.normal(size=(300, 16)).astype(np.float32)
    # index rows in another order than the vector file's: the catalog follows the index
    order = rng.permutation(300)
    index = make_index("flat").build(embeddings[order], [ids[i] for i in order])
    index.save(tmp_path / "index", catalog_manifest("model-abc.1", -0.75, tmp_path / "items.txt"))
    return tmp_path / "index"


def test_load_index_catalog_gives_the_indexed_rows_and_their_vectors(index_dir):
    catalog = load_index_catalog(index_dir)
    vectors = read_vectors(index_dir.parent / "items.txt")
    assert catalog.fingerprint == "model-abc.1" and catalog.bias == -0.75
    assert len(catalog.ids) == 300 and catalog.ids[0] != "m0"
    assert catalog.item_embeddings.shape == (300, 16) and catalog.item_vectors.shape == (300, 128)
    np.testing.assert_array_equal(
        catalog.item_vectors[5], vectors.vectors[vectors.index()[catalog.ids[5]]]
    )
    assert catalog.source["backend"] == "flat"


def test_publish_index_and_rollback(redis_server, index_dir, tmp_path):
    catalog = load_index_catalog(index_dir)
    users = Vectors(np.ones((2, 128), np.float32), ["alice", "bob"])
    write_vectors(tmp_path / "users.bin", users)
    first = publish_index(redis_server.url, index_dir, user_vectors=tmp_path / "users.bin")
    assert first.items == 300 and first.users == 2 and first.model == catalog.fingerprint
    second = publish_index(redis_server.url, index_dir, keep=1)
    assert second.previous == first.version
    with StoreReader(redis_server.url) as reader:
        loaded = reader.load()
        assert loaded.ids == catalog.ids and loaded.bias == pytest.approx(catalog.bias)
        np.testing.assert_array_equal(loaded.item_embeddings, catalog.item_embeddings)
        np.testing.assert_array_equal(loaded.item_vectors, catalog.item_vectors)
        assert loaded.manifest["source"]["backend"] == "flat"
        assert rollback(redis_server.url)["current"] == first.version == reader.current_version()
        assert (reader.user_vector("bob") == 1.0).all()
    with pytest.raises(VersionNotFound, match="nothing to roll back to"):
        rollback(redis_server.url)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        rollback("redis://127.0.0.1:1/0")


def test_an_index_that_cannot_be_published_is_refused_clearly(index_dir, tmp_path):
    make_index("flat").build(np.ones((3, 4), np.float32)).save(tmp_path / "bare")
    with pytest.raises(ArtifactError, match="manifest lacks"):
        load_index_catalog(tmp_path / "bare")
    with pytest.raises(ArtifactError, match="not found"):
        load_index_catalog(index_dir, items=tmp_path / "nowhere.txt")
    (index_dir.parent / "items.txt").write_text("1 2\nm0 0.5 0.5\n")
    with pytest.raises(ArtifactError, match="is not the item vector file"):
        load_index_catalog(index_dir)
