"""Item catalogues and the ItemEmbeddings executor on hand-built artifacts."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from components.common.errors import DataError
from components.example_gen.recipe_csv import vector_ids
from components.item_embeddings.catalogue import iter_catalogue
from components.item_embeddings.component import Executor, ItemEmbeddingsArtifact
from components.item_embeddings.embeddings import embeddings_table, join_shards
from components.pusher.pushed import PushedTowers, record_towers
from components.trainer.export import export_item_tower
from components.trainer.model import build_dssm
from pipeline.configs import BEAM_IN_MEMORY
from pipeline.demo_data import DemoData, demo_samples, write_item_catalogue, write_recipe_csv
from tests.components.example_gen.test_example_gen import run_executor
from tests.tft_helpers import analyze

DIM = 8


def test_csv_and_word2vec_catalogues(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32)
    write_item_catalogue(tmp_path / "items.csv", vectors)
    ((ids, got),) = list(iter_catalogue(str(tmp_path / "items.csv"), DIM))
    assert ids.tolist() == [f"item-{i}".encode() for i in range(5)]
    np.testing.assert_array_equal(got, vectors)
    lines = [f"{len(vectors)} {DIM}"] + [
        f"w{i} " + " ".join(repr(float(v)) for v in row) for i, row in enumerate(vectors)
    ]
    (tmp_path / "items.w2v").write_text("\n".join(lines) + "\n")
    ((ids, got),) = list(iter_catalogue(str(tmp_path / "items.w2v"), DIM))
    assert ids.tolist()[0] == b"w0"
    np.testing.assert_array_equal(got, vectors)


def test_catalogue_errors_name_the_line(tmp_path):
    text = "a,1,2,3\nb,4,nan,6\n"
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=r"bad.csv, line 2, field 3: NaN"):
        list(iter_catalogue(str(tmp_path / "bad.csv"), 3))
    (tmp_path / "short.csv").write_text("a,1,2\n")
    with pytest.raises(DataError, match="not a catalogue of 3-d vectors"):
        list(iter_catalogue(str(tmp_path / "short.csv"), 3))


@pytest.fixture(scope="module")
def pushed_tower(tmp_path_factory):
    """A real item tower SavedModel, ExampleGen output, and a PushedModel pointing at them."""
    root = tmp_path_factory.mktemp("embed")
    labels, users, items, item_vectors = demo_samples(
        DemoData(rows=400, items=30, user_dim=DIM, item_dim=DIM)
    )
    (root / "input").mkdir()
    write_recipe_csv(root / "input" / "all.csv", labels, users, items)
    inputs = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name="train", pattern="all.csv"),
            example_gen_pb2.Input.Split(name="eval", pattern="all.csv"),
        ]
    )
    examples = run_executor(root, inputs, example_gen_pb2.Output(), DIM, DIM)
    transform, _ = analyze(root, labels, users, items)
    keras.utils.set_random_seed(0)
    model = build_dssm(DIM, DIM)
    export_item_tower(model, transform.transform_features_layer(), str(root / "item_tower"), DIM)
    pushed = standard_artifacts.PushedModel()
    record_towers(pushed, PushedTowers(4, str(root / "user_tower"), str(root / "item_tower")))
    return {
        "root": root,
        "examples": examples,
        "pushed": pushed,
        "items": items,
        "item_vectors": item_vectors,
    }


def embed(setup, tmp_path, items=None):
    out = ItemEmbeddingsArtifact()
    out.uri = str(tmp_path / "artifact")
    tf.io.gfile.makedirs(out.uri)
    context = Executor.Context(beam_pipeline_args=BEAM_IN_MEMORY, tmp_dir=str(tmp_path / "tmp"))
    Executor(context).Do(
        {"pushed_model": [setup["pushed"]], "examples": [setup["examples"]]},
        {"item_embeddings": [out]},
        {"output_dir": str(tmp_path / "out"), "items": items, "item_dim": DIM},
    )
    return out


def test_distinct_training_items_are_embedded_by_the_pushed_tower(pushed_tower, tmp_path):
    out = embed(pushed_tower, tmp_path)
    folder = tmp_path / "out" / "item_embeddings" / "4"
    table = pq.read_table(folder / "embeddings.parquet")
    distinct = np.unique(pushed_tower["items"], axis=0)
    assert out.get_int_custom_property("count") == table.num_rows == len(distinct)
    ids = [i.encode() for i in table.column("item_id").to_pylist()]
    assert sorted(ids) == sorted(vector_ids(distinct).tolist())
    tower = tf.saved_model.load(str(pushed_tower["root"] / "item_tower")).signatures[
        "serving_default"
    ]
    by_id = dict(zip(vector_ids(distinct).tolist(), distinct, strict=True))
    expected = tower(item_vector=tf.constant(np.stack([by_id[i] for i in ids])))["item_embedding"]
    np.testing.assert_allclose(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
        expected.numpy(),
        rtol=1e-6,
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 4 and manifest["count"] == len(distinct) and manifest["dim"] == 64


def test_catalogue_ids_and_unmatched_training_items(pushed_tower, tmp_path):
    vectors = pushed_tower["item_vectors"]
    # 10 of the 30 training items are missing; one catalogue item was never trained on
    catalogue = np.concatenate([vectors[:20], np.full((1, vectors.shape[1]), 9.0, vectors.dtype)])
    write_item_catalogue(tmp_path / "items.csv", catalogue)
    embed(pushed_tower, tmp_path, items=str(tmp_path / "items.csv"))
    folder = tmp_path / "out" / "item_embeddings" / "4"
    table = pq.read_table(folder / "embeddings.parquet")
    assert sorted(table.column("item_id").to_pylist()) == sorted(f"item-{i}" for i in range(21))
    used = {bytes(i) for i in vector_ids(np.unique(pushed_tower["items"], axis=0))}
    missing = used - set(vector_ids(catalogue).tolist())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["unmatched_training_items"] == len(missing) > 0


def test_a_repeated_catalogue_id_keeps_its_first_line(pushed_tower, tmp_path, caplog):
    vectors = pushed_tower["item_vectors"][:3]
    rows = [("a", vectors[0]), ("b", vectors[1]), ("a", vectors[2]), ("b", vectors[1])]
    text = "".join(f"{i}," + ",".join(repr(float(v)) for v in vec) + "\n" for i, vec in rows)
    (tmp_path / "items.csv").write_text(text)
    embed(pushed_tower, tmp_path, items=str(tmp_path / "items.csv"))
    table = pq.read_table(tmp_path / "out" / "item_embeddings" / "4" / "embeddings.parquet")
    assert table.column("item_id").to_pylist() == ["a", "b"]  # the catalogue's order
    tower = tf.saved_model.load(str(pushed_tower["root"] / "item_tower")).signatures[
        "serving_default"
    ]
    first = tower(item_vector=tf.constant(vectors[:2]))["item_embedding"].numpy()
    np.testing.assert_allclose(np.stack(table.column("embedding").to_pylist()), first, rtol=1e-6)
    assert "2 line(s) repeat an earlier line's item id" in caplog.text


def test_join_shards_copies_row_groups_in_name_order_and_removes_the_shards(tmp_path):
    rng = np.random.default_rng(0)
    shards, expected = [], []
    for k in (2, 0, 1):  # listed out of order: joined by name
        ids = [f"s{k}-{i}" for i in range(3 + k)]
        emb = rng.normal(size=(len(ids), 4)).astype(np.float32)
        shard = tmp_path / "_shards" / f"embeddings-{k:05d}-of-00003.parquet"
        shard.parent.mkdir(exist_ok=True)
        pq.write_table(embeddings_table(ids, emb), shard, row_group_size=2)
        shards.append(str(shard))
        expected.append((k, ids, emb))
    out = tmp_path / "embeddings.parquet"
    assert join_shards(shards, str(out)) == 3 + 4 + 5
    table = pq.read_table(out)
    expected.sort(key=lambda e: e[0])
    assert table.column("item_id").to_pylist() == [i for _, ids, _ in expected for i in ids]
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_pylist()), np.concatenate([e for *_, e in expected])
    )
    assert not (tmp_path / "_shards").exists()
    assert join_shards([], str(tmp_path / "empty.parquet")) == 0
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_a_version_is_embedded_once(pushed_tower, tmp_path):
    embed(pushed_tower, tmp_path)
    manifest = tmp_path / "out" / "item_embeddings" / "4" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    out = embed(pushed_tower, tmp_path)
    assert manifest.stat().st_mtime_ns == stamp
    assert out.get_int_custom_property("count") == json.loads(manifest.read_text())["count"]


def test_nothing_pushed_nothing_embedded(pushed_tower, tmp_path):
    setup = dict(pushed_tower)
    setup["pushed"] = standard_artifacts.PushedModel()
    record_towers(setup["pushed"], None)
    out = embed(setup, tmp_path)
    assert out.get_int_custom_property("count") == 0
    assert not (tmp_path / "out").exists()


def test_a_catalogue_artifact_is_embedded_and_matched_by_id(pushed_tower, tmp_path):
    from components.common.vectors import Vectors, write_vectors
    from components.sample_gen.component import ItemCatalogue

    distinct = np.unique(pushed_tower["items"], axis=0)
    ids = [i.decode() for i in vector_ids(distinct).tolist()]  # the Examples' item_id
    catalogue = ItemCatalogue()
    catalogue.uri = str(tmp_path / "catalogue")
    write_vectors(tmp_path / "catalogue" / "catalogue.txt", Vectors(distinct[:-3], ids[:-3]))
    out = ItemEmbeddingsArtifact()
    out.uri = str(tmp_path / "artifact")
    tf.io.gfile.makedirs(out.uri)
    context = Executor.Context(beam_pipeline_args=BEAM_IN_MEMORY, tmp_dir=str(tmp_path / "tmp"))
    Executor(context).Do(
        {
            "pushed_model": [pushed_tower["pushed"]],
            "examples": [pushed_tower["examples"]],
            "catalogue": [catalogue],
        },
        {"item_embeddings": [out]},
        {"output_dir": str(tmp_path / "out"), "items": None, "item_dim": DIM},
    )
    folder = tmp_path / "out" / "item_embeddings" / "4"
    table = pq.read_table(folder / "embeddings.parquet")
    assert table.column("item_id").to_pylist() == ids[:-3]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["count"] == len(ids) - 3
    assert manifest["unmatched_training_items"] == 3  # matched by id: only the 3 left out


def test_a_catalogue_is_known_by_content_and_new_items_go_to_the_next_version(
    pushed_tower, tmp_path
):
    vectors = pushed_tower["item_vectors"]
    write_item_catalogue(tmp_path / "items.csv", vectors[:20])
    first = embed(pushed_tower, tmp_path, items=str(tmp_path / "items.csv"))
    manifest_path = tmp_path / "out" / "item_embeddings" / "4" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == 20 and len(manifest["catalogue_sha256"]) == 64
    assert first.get_string_custom_property("catalogue_sha256") == manifest["catalogue_sha256"]
    # the same bytes at another path: the same catalogue, nothing changed
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "moved.csv").write_bytes((tmp_path / "items.csv").read_bytes())
    same = embed(pushed_tower, tmp_path, items=str(tmp_path / "copy" / "moved.csv"))
    assert same.get_int_custom_property("catalogue_changed") == 0
    assert same.get_string_custom_property("catalogue_sha256") == manifest["catalogue_sha256"]
    # five new items: version 4 keeps its 20 and says the catalogue changed...
    grown = np.concatenate(
        [vectors[:20], np.full((5, DIM), 3.0, vectors.dtype) + np.arange(5)[:, None]]
    )
    write_item_catalogue(tmp_path / "grown.csv", grown)
    again = embed(pushed_tower, tmp_path, items=str(tmp_path / "grown.csv"))
    assert again.get_int_custom_property("catalogue_changed") == 1
    assert again.get_int_custom_property("count") == 20
    assert json.loads(manifest_path.read_text()) == manifest
    # ...and the next pushed version embeds all 25
    setup = dict(pushed_tower)
    setup["pushed"] = standard_artifacts.PushedModel()
    record_towers(
        setup["pushed"],
        PushedTowers(
            5, str(pushed_tower["root"] / "user_tower"), str(pushed_tower["root"] / "item_tower")
        ),
    )
    nxt = embed(setup, tmp_path, items=str(tmp_path / "grown.csv"))
    table = pq.read_table(tmp_path / "out" / "item_embeddings" / "5" / "embeddings.parquet")
    assert nxt.get_int_custom_property("count") == 25 == table.num_rows
    assert {f"item-{i}" for i in range(20, 25)} <= set(table.column("item_id").to_pylist())
    assert nxt.get_string_custom_property("catalogue_sha256") != manifest["catalogue_sha256"]


def test_an_id_repeated_in_a_later_chunk_keeps_its_first_line(tmp_path, monkeypatch, caplog):
    from components.item_embeddings import catalogue

    monkeypatch.setattr(catalogue, "BLOCK_BYTES", 16)  # about a line a chunk
    (tmp_path / "items.csv").write_text("a,1,2\nb,3,4\na,5,6\nc,7,8\nb,9,9\n")
    path = str(tmp_path / "items.csv")
    assert len(list(catalogue.iter_catalogue(path, 2))) >= 2  # the repeats in a later chunk
    chunks = list(catalogue.iter_distinct_catalogue(path, 2))
    ids = [i for chunk_ids, _ in chunks for i in chunk_ids.tolist()]
    vectors = np.concatenate([v for _, v in chunks])
    assert ids == [b"a", b"b", b"c"]
    np.testing.assert_array_equal(vectors, [[1, 2], [3, 4], [7, 8]])
    assert "2 line(s) repeat" in caplog.text
