"""Run inside the GCS namespace only (tests/gcs_emulator.py; started by
tests/pipeline/test_gcs_pipeline.py): the whole pipeline on LocalDagRunner with data, pipeline root,
serving dir and output dir on `gs://` and ML Metadata in a local SQLite file, asserting what
tests/pipeline/test_pipeline_e2e.py asserts on a local disk."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

BUCKET = os.environ.get("FINETOWER_GCS_TEST_BUCKET")
pytestmark = pytest.mark.skipif(BUCKET is None, reason="runs inside tests/gcs_emulator.py only")


def gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_text(uri: str) -> str:
    with gfile().GFile(uri) as f:
        return f.read()


def upload(local, uri: str) -> str:
    gfile().makedirs(uri.rsplit("/", 1)[0])
    gfile().copy(str(local), uri, overwrite=True)
    return uri


def listing(uri: str) -> list[str]:
    return sorted(n.rstrip("/") for n in gfile().listdir(uri))


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Run 1 and an unchanged run 2 on small data in a fresh folder of the bucket."""
    from tests.pipeline_helpers import run_local_runner, small_recipe_files

    local = tmp_path_factory.mktemp("gcs_e2e")
    data = small_recipe_files(local / "data")
    root = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    train = upload(data["train"], f"{root}/data/train/train.csv")
    val = upload(data["eval"], f"{root}/data/eval/eval.csv")
    out = f"{root}/out"
    metadata = local / "metadata.sqlite"
    args = ["--train_data", train, "--val_data", val, "--output_dir", out]
    args += ["--metadata_path", str(metadata)]
    first = run_local_runner(*args, timeout=1800)
    second = run_local_runner(*args, timeout=1800)  # also after a failed first run: the cache
    return {
        "data": data,
        "local_train": data["train"],
        "val": val,
        "root": root,
        "out": out,
        "metadata": metadata,
        "first": first,
        "second": second,
    }


def test_every_component_completes_and_every_artifact_is_on_the_bucket(pipeline_runs):
    from tests.pipeline.test_pipeline_e2e import COMPONENTS, executions_by_component

    first = pipeline_runs["first"]
    runs = executions_by_component(pipeline_runs["metadata"])
    states = runs[0] if runs else {}
    assert first.returncode == 0 and set(states.values()) == {"COMPLETE"}, (
        f"states: {states}\n{first.stderr[-3000:]}"
    )
    assert set(states) == COMPONENTS
    assert "pushed version 1 of user_tower and item_tower" in first.stdout
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(pipeline_runs["metadata"])
    uris = [a.uri for a in metadata_store.MetadataStore(connection).get_artifacts()]
    assert uris and all(u.startswith(f"{pipeline_runs['out']}/tfx/") for u in uris), uris


def test_both_towers_pushed_under_one_version_and_models_config_names_them(pipeline_runs):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    serving = f"{pipeline_runs['out']}/serving"
    assert listing(f"{serving}/user_tower") == ["1"]
    assert listing(f"{serving}/item_tower") == ["1"]
    config = text_format.Parse(
        read_text(f"{serving}/models.config"), model_server_config_pb2.ModelServerConfig()
    )
    names = {c.name: c for c in config.model_config_list.config}
    assert set(names) == {"user_tower", "item_tower"}
    for name, model in names.items():
        assert model.base_path == f"{serving}/{name}"
        assert gfile().exists(f"{model.base_path}/1/saved_model.pb")
        assert list(model.model_version_policy.specific.versions) == [1]


def test_folded_towers_reproduce_the_full_models_probability(pipeline_runs):
    from tests.pipeline_helpers import folded_and_full_probabilities

    data, serving = pipeline_runs["data"], f"{pipeline_runs['out']}/serving"
    cut = data["cut"]
    users, items = data["users"][cut : cut + 200], data["items"][cut : cut + 200]
    push = json.loads(read_text(f"{serving}/user_tower/1/assets.extra/finetower_push.json"))
    assert push["model_uri"].startswith(f"{pipeline_runs['out']}/tfx/")
    folded, probability = folded_and_full_probabilities(serving, push["model_uri"], users, items)
    np.testing.assert_allclose(folded, probability, atol=1e-5)


def test_one_embedding_per_distinct_item_and_an_index_over_them(pipeline_runs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.pipeline_helpers import distinct_rows

    out = pipeline_runs["out"]
    manifest = json.loads(read_text(f"{out}/item_embeddings/1/manifest.json"))
    with gfile().GFile(f"{out}/item_embeddings/1/embeddings.parquet", "rb") as f:
        table = pq.read_table(pa.BufferReader(f.read()))
    assert manifest["count"] == table.num_rows == distinct_rows(pipeline_runs["data"]["items"])
    ids = table.column("item_id").to_pylist()
    assert len(set(ids)) == len(ids)
    ann = json.loads(read_text(f"{out}/ann_index/1/manifest.json"))
    assert ann["version"] == 1 and ann["count"] == manifest["count"]
    assert "ANN index (ivf)" in pipeline_runs["first"].stdout


def test_second_run_is_cached_and_pushes_nothing_new(pipeline_runs):
    from tests.pipeline.test_pipeline_e2e import executions_by_component

    second = pipeline_runs["second"]
    runs = executions_by_component(pipeline_runs["metadata"])
    assert len(runs) == 2
    for component in ("RecipeCsvExampleGen", "StatisticsGen", "Transform", "Trainer"):
        assert runs[1][component] == "CACHED", runs[1]
    assert second.returncode == 0, second.stderr[-3000:]
    out = pipeline_runs["out"]
    assert listing(f"{out}/serving/user_tower") == ["1"]
    assert listing(f"{out}/item_embeddings") == ["1"]
    assert "pushed version 1" in second.stdout


def test_a_bad_line_fails_the_run_names_it_and_pushes_nothing(pipeline_runs, tmp_path):
    from pipeline.run_summary import latest_run_artifacts
    from tests.pipeline_helpers import run_local_runner

    out, root = pipeline_runs["out"], pipeline_runs["root"]
    before = read_text(f"{out}/serving/models.config") if gfile().exists(out) else None
    lines = pipeline_runs["local_train"].read_text().splitlines(keepends=True)
    fields = lines[41].split(",")
    fields[7] = "oops"
    lines[41] = ",".join(fields)
    local_bad = tmp_path / "train.csv"
    local_bad.write_text("".join(lines))
    bad = upload(local_bad, f"{root}/bad/train.csv")
    result = run_local_runner(
        *["--train_data", bad, "--val_data", pipeline_runs["val"], "--output_dir", out],
        *["--metadata_path", str(pipeline_runs["metadata"])],
        timeout=1800,
    )
    assert result.returncode != 0
    assert f"{bad}, line 42, field 8: 'oops' is not a number" in result.stderr, result.stderr[
        -3000:
    ]
    assert "nothing was pushed" in result.stderr
    assert listing(f"{out}/serving/user_tower") == ["1"]
    assert read_text(f"{out}/serving/models.config") == before
    assert latest_run_artifacts(str(pipeline_runs["metadata"])).get("PushedModel") is None
