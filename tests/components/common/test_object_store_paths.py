"""The non-Beam helpers on an object store: TensorFlow's in-memory `ram://` filesystem stands in
for gs:// (a URI, no rename, no local path), so `pathlib` or `open` on a URI fails here."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.common.paths import copy_tree, input_fingerprint, is_remote, join, split_patterns
from components.common.publish import staged_dir
from components.embeddings_publisher.ann import ann_uri, build_ann_index
from components.item_embeddings.catalogue import iter_catalogue
from components.item_embeddings.embeddings import (
    build_manifest,
    read_item_embeddings,
    read_manifest,
    write_embeddings,
    write_manifest,
)
from components.pusher.component import Executor as PusherExecutor
from components.pusher.pushed import PushedTowers, pushed_towers
from tests.tiny_towers import tiny_model


@pytest.fixture
def bucket() -> str:
    """A fresh `ram://` folder for one test."""
    return f"ram://bucket-{uuid.uuid4().hex[:8]}"


def write(path: str, data: bytes) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def test_uris_are_remote_and_joined_without_losing_the_scheme():
    assert is_remote("gs://b/x") and is_remote("ram://x") and not is_remote("/tmp/x")
    assert join("gs://b/data", "item_embeddings", "3") == "gs://b/data/item_embeddings/3"
    assert ann_uri("gs://b/out", 7) == "gs://b/out/ann_index/7"


def test_a_catalogue_is_read_from_a_uri(bucket):
    # gs:// failed here with "I/O operation on closed file": GFile has no `closed`
    write(f"{bucket}/items.csv", b"a,1,2,3\nb,4,5,6\n")
    [(ids, vectors)] = list(iter_catalogue(f"{bucket}/items.csv", 3))
    assert ids.tolist() == [b"a", b"b"]
    np.testing.assert_array_equal(vectors, [[1, 2, 3], [4, 5, 6]])


def test_item_embeddings_and_their_manifest_round_trip_on_a_uri(bucket):
    folder = f"{bucket}/item_embeddings/2"
    embeddings = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert (
        write_embeddings(
            join(folder, "embeddings.parquet"), [(np.array(["x", "y", "z"]), embeddings)]
        )
        == 3
    )
    towers = PushedTowers(2, f"{bucket}/serving/user_tower/2", f"{bucket}/serving/item_tower/2")
    write_manifest(folder, build_manifest(towers, 3, 4, None, 0))
    ids, got, manifest = read_item_embeddings(folder)
    assert ids == ["x", "y", "z"] and manifest["dim"] == 4 and manifest["count"] == 3
    assert manifest["model"] == towers.item_tower_uri and manifest["catalogue"] is None
    np.testing.assert_array_equal(got, embeddings)
    assert read_manifest(f"{bucket}/item_embeddings/9") is None


def test_a_staged_folder_appears_on_a_uri_complete_with_its_marker(bucket):
    final = f"{bucket}/out/7"
    with staged_dir(final, last="manifest.json") as folder:
        (folder / "sub").mkdir()
        (folder / "sub" / "data.bin").write_bytes(b"data")
        (folder / "manifest.json").write_text("{}")
        assert not tf.io.gfile.exists(final)  # nothing visible while it is written
    assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(final)) == ["manifest.json", "sub"]
    with tf.io.gfile.GFile(f"{final}/sub/data.bin", "rb") as f:
        assert f.read() == b"data"
    with pytest.raises(FileExistsError), staged_dir(final):
        pass


def test_a_failed_staged_folder_leaves_nothing_on_a_uri(bucket):
    final = f"{bucket}/out/8"
    with pytest.raises(RuntimeError, match="crash"), staged_dir(final) as folder:
        (folder / "part").write_bytes(b"half")
        raise RuntimeError("crash")
    assert not tf.io.gfile.exists(final)


def test_the_pusher_pushes_both_towers_to_a_uri_and_records_their_uris(bucket, tmp_path):
    local = tiny_model(tmp_path)
    model = standard_artifacts.Model()
    model.uri, model.id = f"{bucket}/model", 1
    copy_tree(local.uri, model.uri)
    serving = f"{bucket}/serving"
    out = standard_artifacts.PushedModel()
    PusherExecutor().Do({"model": [model]}, {"pushed_model": [out]}, {"serving_dir": serving})
    towers = pushed_towers(out)
    assert towers == PushedTowers(1, f"{serving}/user_tower/1", f"{serving}/item_tower/1")
    for tower in ("user_tower", "item_tower"):
        with tf.io.gfile.GFile(f"{serving}/{tower}/1/saved_model.pb", "rb") as f:
            assert f.read() == (tmp_path / "model" / tower / "saved_model.pb").read_bytes()


def test_an_ann_index_is_built_locally_and_published_to_a_uri(bucket):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((40, 8)).astype(np.float32)
    final = ann_uri(f"{bucket}/out", 3)
    manifest = build_ann_index(
        final,
        [str(i) for i in range(40)],
        embeddings,
        "flat",
        embeddings[:5],
        embeddings,
        {"version": 3},
    )
    assert manifest["version"] == 3 and manifest["ann_recall"] == pytest.approx(1.0)
    with tf.io.gfile.GFile(f"{final}/manifest.json") as f:
        assert json.load(f)["count"] == 40
    assert tf.io.gfile.exists(f"{final}/item_vectors.npy")


def test_an_input_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\n")
    before = input_fingerprint(str(path), None)
    path.write_text("user,item,timestamp\nu,i,1\n")
    assert input_fingerprint(str(path), None) != before
    assert input_fingerprint("gs://b/log.csv") == "gs://b/log.csv"


def test_split_patterns_name_every_split():
    examples = standard_artifacts.Examples()
    examples.uri = "gs://b/examples/3"
    examples.split_names = '["train", "eval"]'
    assert split_patterns(examples) == [
        "gs://b/examples/3/Split-train/*",
        "gs://b/examples/3/Split-eval/*",
    ]


def test_embedding_shards_on_a_uri_are_joined_into_one_file_there(bucket):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.item_embeddings.embeddings import embeddings_table, join_shards

    shards, vectors = [], np.arange(24, dtype=np.float32).reshape(6, 4)
    for k in range(2):
        sink = pa.BufferOutputStream()
        pq.write_table(embeddings_table([f"i{k}{j}" for j in range(3)], vectors[3 * k :][:3]), sink)
        shards.append(f"{bucket}/out/_shards/embeddings-{k:05d}-of-00002.parquet")
        write(shards[-1], sink.getvalue().to_pybytes())
    assert join_shards(shards, f"{bucket}/out/embeddings.parquet") == 6
    assert not tf.io.gfile.exists(f"{bucket}/out/_shards")
    write(f"{bucket}/out/manifest.json", b"{}")
    ids, embeddings, _ = read_item_embeddings(f"{bucket}/out")
    assert ids == ["i00", "i01", "i02", "i10", "i11", "i12"]
    np.testing.assert_array_equal(embeddings, vectors)
