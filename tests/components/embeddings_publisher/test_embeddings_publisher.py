"""The EmbeddingsPublisher executor on hand-built artifacts over a real pushed run, and a real
redis-server: the ANN index folder, its measured recall, Redis publishing exactly once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tfx.types import standard_artifacts

from components.common.errors import DataError
from components.common.user_vectors import vectors_sha256
from components.embeddings_publisher import publishing
from components.embeddings_publisher.ann import pretrained_item_vectors
from components.embeddings_publisher.component import (
    Executor,
    PublishedEmbeddingsArtifact,
    pretrained_source,
)
from components.example_gen.recipe_csv import vector_ids
from components.item_embeddings.component import ItemEmbeddingsArtifact
from components.pusher.pushed import PushedTowers, record_towers
from serving.index import load_index
from serving.store import StoreReader, rollback

# -- helpers the recall service tests share -----------------------------------------------


def copy_run(pushed_run: dict, root: Path) -> Path:
    """A private copy of the pushed run's serving/ and item_embeddings/ (never touch the
    session's own folders)."""
    out = root / "out"
    for name in ("serving", "item_embeddings"):
        shutil.copytree(pushed_run["out"] / name, out / name)
    return out


def push_copy(out: Path, version: int, *, from_version: int = 1, scale: float = 1.0) -> None:
    """Push `version` as a copy of `from_version`: both towers, and the item embeddings (times
    `scale`) with a manifest naming the new item tower; the version appears complete."""
    serving = out / "serving"
    for tower in ("item_tower", "user_tower"):
        staging = serving / tower / f".tmp-{version}"
        shutil.copytree(serving / tower / str(from_version), staging)
        staging.rename(serving / tower / str(version))
    source = out / "item_embeddings" / str(from_version)
    staging = out / "item_embeddings" / f".tmp-{version}"
    staging.mkdir()
    table = pq.read_table(source / "embeddings.parquet")
    if scale != 1.0:
        values = table.column("embedding").combine_chunks()
        scaled = pa.ListArray.from_arrays(
            values.offsets, pa.array(values.flatten().to_numpy() * np.float32(scale))
        )
        table = table.set_column(1, "embedding", scaled)
    pq.write_table(table, staging / "embeddings.parquet")
    manifest = json.loads((source / "manifest.json").read_text())
    manifest.update(version=version, model=str(serving / "item_tower" / str(version)))
    (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(out / "item_embeddings" / str(version))


def embeddings_artifact(out: Path, version: int) -> ItemEmbeddingsArtifact:
    folder = out / "item_embeddings" / str(version)
    artifact = ItemEmbeddingsArtifact()
    artifact.uri = str(folder)
    artifact.set_int_custom_property("version", version)
    artifact.set_int_custom_property(
        "count", json.loads((folder / "manifest.json").read_text())["count"]
    )
    artifact.set_string_custom_property("published_dir", str(folder))
    serving = out / "serving"
    record_towers(
        artifact,
        PushedTowers(
            version,
            str(serving / "user_tower" / str(version)),
            str(serving / "item_tower" / str(version)),
        ),
    )
    return artifact


def write_catalogue(pushed_run: dict, path: Path) -> Path:
    """The run's pretrained item vectors as a catalogue CSV whose ids are the vector hashes
    the embedding step gave them."""
    vectors = pushed_run["data"]["item_vectors"].astype(np.float32)
    ids = [i.decode() for i in vector_ids(vectors)]
    lines = [
        ",".join([item, *(repr(float(v)) for v in row)])
        for item, row in zip(ids, vectors, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_publisher(
    out: Path,
    version: int,
    tmp: Path,
    *,
    backend: str = "ivf",
    redis_url: str | None = None,
    items: Path | None = None,
    ann_params: dict | None = None,
    recipe: dict | None = None,
) -> PublishedEmbeddingsArtifact:
    """Run the publisher on version `version` of `out`; `recipe`: its user_vector_last_n /
    user_vector_half_life properties (unset: the recipe's defaults)."""
    published = PublishedEmbeddingsArtifact()
    published.uri = str(tmp / f"published-{version}-{backend}-{len(list(tmp.glob('published-*')))}")
    Path(published.uri).mkdir(parents=True)
    Executor().Do(
        {"item_embeddings": [embeddings_artifact(out, version)]},
        {"published": [published]},
        {
            "output_dir": str(out),
            "ann_backend": backend,
            "redis_url": redis_url,
            "items": str(items) if items else None,
            "item_dim": 128,
            "ann_params": json.dumps(ann_params) if ann_params else None,
            **(recipe or {}),
        },
    )
    return published


# -- tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_copy(pushed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("publisher")
    out = copy_run(pushed_run, root)
    return {"out": out, "items": write_catalogue(pushed_run, root / "items.csv"), "root": root}


def test_ann_index_is_built_and_its_recall_measured(run_copy, pushed_run, tmp_path):
    out = run_copy["out"]
    published = run_publisher(out, 1, tmp_path, items=run_copy["items"])
    ann_dir = out / "ann_index" / "1"
    manifest = json.loads((ann_dir / "manifest.json").read_text())
    index = load_index(ann_dir)
    ids, embeddings, _ = publishing.read_item_embeddings(out / "item_embeddings" / "1")
    assert index.ids == ids and manifest["backend"] == "ivf" and manifest["version"] == 1
    # the recall the manifest reports is the one the same seeded queries give again
    tower = publishing.UserTower(str(out / "serving" / "user_tower" / "1"))
    vectors = np.load(ann_dir / "item_vectors.npy")
    queries, _ = publishing.sample_queries(tower, vectors, publishing.RECALL_QUERIES, 0)
    recall = publishing.ann_recall(index, queries, embeddings)
    assert manifest["ann_recall"] == pytest.approx(recall) and 0.9 <= recall <= 1.0
    assert published.get_float_custom_property("ann_recall_at_100") == pytest.approx(recall)
    assert published.get_string_custom_property("ann_dir") == str(ann_dir)
    assert manifest["output_bias"] == pytest.approx(tower.bias)
    # pretrained vectors in index row order: the run's item vectors by their hash ids
    by_id = dict(
        zip(
            vector_ids(pushed_run["data"]["item_vectors"]).tolist(),
            pushed_run["data"]["item_vectors"],
            strict=True,
        )
    )
    np.testing.assert_array_equal(vectors, np.stack([by_id[i.encode()] for i in ids]))
    stamp = (ann_dir / "manifest.json").stat().st_mtime_ns
    run_publisher(out, 1, tmp_path, items=run_copy["items"])  # again: kept as it is
    assert (ann_dir / "manifest.json").stat().st_mtime_ns == stamp


def test_pretrained_vectors_come_from_the_examples_without_a_catalogue(run_copy, pushed_run):
    examples_dirs = sorted((pushed_run["out"] / "tfx").glob("*ExampleGen*/examples/*"))
    assert examples_dirs, "the pushed run has no ExampleGen output"
    examples = standard_artifacts.Examples()
    examples.uri = str(examples_dirs[-1])
    examples.split_names = '["train", "eval"]'
    ids, _, manifest = publishing.read_item_embeddings(run_copy["out"] / "item_embeddings" / "1")
    vectors, source = pretrained_item_vectors(
        ids, pretrained_source({"examples": [examples]}, {"item_dim": 128}, manifest)
    )
    by_id = dict(
        zip(
            vector_ids(pushed_run["data"]["item_vectors"]).tolist(),
            pushed_run["data"]["item_vectors"],
            strict=True,
        )
    )
    assert source == examples.uri
    np.testing.assert_array_equal(vectors, np.stack([by_id[i.encode()] for i in ids]))


def test_a_failed_build_leaves_no_index_folder(tmp_path):
    embeddings = np.ones((50, 8), np.float32)
    embeddings[3, 2] = np.nan
    final = tmp_path / "ann_index" / "7"
    with pytest.raises(DataError, match="NaN"):
        publishing.build_ann_index(
            final,
            [str(i) for i in range(50)],
            embeddings,
            "flat",
            embeddings[:2],
            None,
            {"version": 7},
        )
    assert not final.exists()
    assert not (tmp_path / "ann_index").exists() or not list((tmp_path / "ann_index").iterdir())


def test_backend_parameters_reach_the_index(run_copy, tmp_path):
    out = copy_run({"out": run_copy["out"]}, tmp_path)
    published = run_publisher(
        out, 1, tmp_path, backend="hnsw", items=run_copy["items"], ann_params={"ef_search": 7}
    )
    manifest = json.loads((out / "ann_index" / "1" / "manifest.json").read_text())
    assert manifest["backend"] == "hnsw" and manifest["params"]["ef_search"] == 7
    assert published.get_string_custom_property("ann_backend") == "hnsw"


def test_unknown_backend_is_refused_by_name(run_copy, tmp_path):
    with pytest.raises(DataError, match="ann_backend 'faiss' is not one of"):
        run_publisher(run_copy["out"], 1, tmp_path, backend="faiss")


def test_redis_gets_each_pushed_version_once_and_switches_atomically(
    run_copy, redis_server, tmp_path
):
    out = copy_run({"out": run_copy["out"]}, tmp_path)
    url = redis_server.url
    first = run_publisher(out, 1, tmp_path, redis_url=url, items=run_copy["items"])
    reader = StoreReader(url)
    v1 = reader.current_version()
    assert v1.startswith("v1-") and first.get_string_custom_property("redis_version") == v1
    assert first.get_int_custom_property("redis_published") == 1
    loaded = reader.load()
    ids, embeddings, _ = publishing.read_item_embeddings(out / "item_embeddings" / "1")
    assert loaded.ids == ids
    np.testing.assert_array_equal(loaded.item_embeddings, embeddings)
    np.testing.assert_array_equal(
        loaded.item_vectors, np.load(out / "ann_index" / "1" / "item_vectors.npy")
    )
    assert loaded.manifest["source"]["pushed_version"] == 1

    again = run_publisher(out, 1, tmp_path, redis_url=url, items=run_copy["items"])
    assert again.get_int_custom_property("redis_published") == 0
    assert reader.versions() == [v1] and reader.current_version() == v1

    push_copy(out, 2, scale=2.0)
    second = run_publisher(out, 2, tmp_path, redis_url=url, items=run_copy["items"])
    v2 = reader.current_version()
    assert v2.startswith("v2-") and second.get_int_custom_property("redis_published") == 1
    assert reader.versions() == [v2, v1]  # the previous version is kept for rollback
    np.testing.assert_array_equal(reader.load(v2).item_embeddings, 2 * embeddings)

    assert rollback(url) == {"previous": v2, "current": v1}
    # a re-run of version 2's publisher does not undo the rollback
    third = run_publisher(out, 2, tmp_path, redis_url=url, items=run_copy["items"])
    assert third.get_int_custom_property("redis_published") == 0
    assert reader.current_version() == v1 and reader.versions() == [v2, v1]
    reader.close()


def test_a_password_protected_redis_takes_its_password_from_the_environment_only(
    run_copy, tmp_path, monkeypatch
):
    """The step's URL (an exec property: recorded in ML Metadata) carries no password; the
    step reads it from $FINETOWER_REDIS_PASSWORD when it runs, and a URL with one is refused
    before any pipeline is built."""
    from pipeline.configs import ConfigError, PipelineConfig
    from serving.store.layout import REDIS_PASSWORD_ENV
    from tests.redis_server import RedisServer

    with pytest.raises(ConfigError, match=r"\$FINETOWER_REDIS_PASSWORD"):
        PipelineConfig(redis_url="redis://:hunter2@127.0.0.1:6379/0")
    out = copy_run({"out": run_copy["out"]}, tmp_path)
    with RedisServer(tmp_path / "redis-auth", password="s3cret-pw") as server:
        monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)
        with pytest.raises(Exception, match="(?i)auth"):  # no password: Redis refuses
            run_publisher(out, 1, tmp_path, redis_url=server.url, items=run_copy["items"])
        monkeypatch.setenv(REDIS_PASSWORD_ENV, "s3cret-pw")
        published = run_publisher(out, 1, tmp_path, redis_url=server.url, items=run_copy["items"])
        assert published.get_int_custom_property("redis_published") == 1
        with StoreReader(server.url) as reader:
            assert reader.current_version() == published.get_string_custom_property("redis_version")


def test_the_index_lives_in_the_artifact_and_is_published_as_a_copy(run_copy, tmp_path):
    out = copy_run({"out": run_copy["out"]}, tmp_path)
    first = run_publisher(out, 1, tmp_path, items=run_copy["items"])
    again = run_publisher(out, 1, tmp_path, items=run_copy["items"])  # kept, copied back
    published = out / "ann_index" / "1"
    names = sorted(p.name for p in published.iterdir())
    assert "manifest.json" in names and "item_vectors.npy" in names
    for artifact in (first, again):
        folder = Path(artifact.uri) / "ann_index"
        assert sorted(p.name for p in folder.iterdir()) == names
        for name in names:
            assert (folder / name).read_bytes() == (published / name).read_bytes()


def test_a_publish_refused_by_a_rollback_pin_says_so_and_is_not_current(redis_server):
    ids = [f"item-{i}" for i in range(6)]
    vectors = np.eye(6, 4, dtype=np.float32)

    def publish(version: int) -> publishing.StoreOutcome:
        return publishing.publish_once(
            redis_server.url, version, ids, vectors, vectors, 0.0, source={}
        )

    assert publish(1).published and publish(2).published
    rollback(redis_server.url, to=1, pin=True)
    refused = publish(3)
    assert not refused.published and refused.store_version is None
    assert "version 3 not made current" in refused.reason and "pinned" in refused.reason
    with StoreReader(redis_server.url) as reader:
        assert publishing.pushed_version_of(reader.current_version()) == 1


def test_the_version_records_its_user_vector_recipe_by_content(run_copy, pushed_run, tmp_path):
    out, items = run_copy["out"], run_copy["items"]
    push_copy(out, 5)
    published = run_publisher(out, 5, tmp_path, items=items, recipe={"user_vector_last_n": 3})
    manifest = json.loads((out / "ann_index" / "5" / "manifest.json").read_text())
    recipe = manifest[publishing.RECIPE_KEY]
    vectors = np.load(out / "ann_index" / "5" / "item_vectors.npy")
    ids = json.loads((out / "ann_index" / "5" / "ids.json").read_text())
    assert recipe == {
        "last_n": 3,
        "half_life": None,
        "dim": 128,
        "item_vectors_sha256": vectors_sha256(ids, vectors),
    }
    assert json.loads(published.get_string_custom_property(publishing.RECIPE_KEY)) == recipe
    # the same vectors from a copy of the catalogue at another path, rows reversed: the same
    moved = tmp_path / "elsewhere" / "catalogue.csv"
    moved.parent.mkdir()
    moved.write_text("\n".join(reversed(items.read_text().splitlines())) + "\n")
    push_copy(out, 6)
    run_publisher(out, 6, tmp_path, items=moved, recipe={"user_vector_last_n": 3})
    same = json.loads((out / "ann_index" / "6" / "manifest.json").read_text())
    assert same[publishing.RECIPE_KEY] == recipe
    # re-pretrained vectors (one item's changed), the whole history, a half-life: all recorded
    lines = items.read_text().splitlines()
    head, *values = lines[0].split(",")
    lines[0] = ",".join([head, *(repr(float(v) + 0.5) for v in values)])
    changed = tmp_path / "changed.csv"
    changed.write_text("\n".join(lines) + "\n")
    push_copy(out, 7)
    run_publisher(
        out,
        7,
        tmp_path,
        items=changed,
        recipe={"user_vector_last_n": 0, "user_vector_half_life": 2.0},
    )
    other = json.loads((out / "ann_index" / "7" / "manifest.json").read_text())
    assert other[publishing.RECIPE_KEY]["item_vectors_sha256"] != recipe["item_vectors_sha256"]
    assert other[publishing.RECIPE_KEY]["last_n"] is None
    assert other[publishing.RECIPE_KEY]["half_life"] == 2.0


def test_catalogue_vectors_keep_each_ids_first_line_as_itemembeddings_does(tmp_path):
    from components.embeddings_publisher.ann import catalogue_vectors

    (tmp_path / "items.csv").write_text("a,1,2\nb,3,4\na,5,6\nc,7,8")  # no last newline
    ids, vectors = catalogue_vectors(str(tmp_path / "items.csv"), 2)
    assert ids.tolist() == [b"a", b"b", b"c"]
    np.testing.assert_array_equal(vectors, [[1, 2], [3, 4], [7, 8]])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: not a catalogue of 2-d vectors"):
        catalogue_vectors(str(tmp_path / "empty.csv"), 2)
