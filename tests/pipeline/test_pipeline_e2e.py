"""The whole pipeline on LocalDagRunner: real TFX components, SQLite ML Metadata, real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format
from pipeline_helpers import (
    REPO,
    activated,
    distinct_rows,
    run_local_runner,
    small_recipe_files,
    tfx_cli,
)
from tensorflow_serving.config import model_server_config_pb2

from pipeline.run_summary import latest_run_artifacts

COMPONENTS = {
    "RecipeCsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "TwoTowerPusher",
    "ItemEmbeddings",
    "EmbeddingsPublisher",
    "ServingConfig",
}


def executions_by_component(metadata_path: Path) -> list[dict[str, str]]:
    """For each pipeline run, oldest first: component id -> last known execution state."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(metadata_path)
    store = metadata_store.MetadataStore(connection)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    nodes = {c.id: c.name.split(".")[-1] for c in store.get_contexts_by_type("node")}
    states = metadata_store_pb2.Execution.State.Name
    out = []
    for run in runs:
        by_node = {}
        for execution in store.get_executions_by_context(run.id):
            for ctx in store.get_contexts_by_execution(execution.id):
                if ctx.id in nodes:
                    by_node[nodes[ctx.id]] = states(execution.last_known_state)
        out.append(by_node)
    return out


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Run 1 and an unchanged run 2 on small data; the output dir they share."""
    root = tmp_path_factory.mktemp("e2e")
    data = small_recipe_files(root / "data")
    out = root / "out"
    args = [
        "--train_data",
        str(data["train"]),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(out),
    ]
    first = run_local_runner(*args)
    assert first.returncode == 0, first.stderr[-4000:]
    manifest = out / "item_embeddings" / "1" / "manifest.json"
    manifest_mtime = manifest.stat().st_mtime_ns
    second = run_local_runner(*args)
    assert second.returncode == 0, second.stderr[-4000:]
    return {
        "data": data,
        "out": out,
        "args": args,
        "first": first,
        "second": second,
        "manifest_mtime": manifest_mtime,
    }


def test_every_component_completes_and_summary_names_the_push(pipeline_runs):
    runs = executions_by_component(pipeline_runs["out"] / "metadata.sqlite")
    assert set(runs[0]) == COMPONENTS
    assert set(runs[0].values()) == {"COMPLETE"}, runs[0]
    summary = pipeline_runs["first"].stdout
    assert "pushed version 1 of user_tower and item_tower" in summary
    assert "eval AUC" in summary and "blessed: yes" in summary
    assert "ANN index (ivf)" in summary
    out = pipeline_runs["out"]
    ann = json.loads((out / "ann_index" / "1" / "manifest.json").read_text())
    embedded = json.loads((out / "item_embeddings" / "1" / "manifest.json").read_text())
    assert ann["version"] == 1 and ann["count"] == embedded["count"] > 0


# what looks like an error or a log line, e.g. `E0000 00:00:17.. cuda_platform.cc:52] failed
# call to cuInit`, `WARNING:absl:...`, `W0000 ...`, a traceback
LOG_OR_ERROR_LINE = re.compile(r"^[EWIF]\d{4} |ERROR|WARNING|Traceback|CUDA|NodeDef", re.M)


def progress_lines(stdout: str) -> dict[str, str]:
    """Component id -> its progress line (`  Trainer   ran   12.3 s  val AUC ...`)."""
    found = {}
    for line in stdout.splitlines():
        words = line.split()
        if line.startswith("  ") and len(words) >= 4 and words[3] == "s":
            found[words[0]] = line
    return found


def test_console_is_a_line_per_component_and_the_summary_logs_go_to_the_file(pipeline_runs):
    first, out = pipeline_runs["first"], pipeline_runs["out"]
    console = first.stdout + first.stderr
    assert not LOG_OR_ERROR_LINE.search(console), console
    assert len(console.splitlines()) <= 30, console
    lines = progress_lines(first.stdout)
    assert set(lines) == COMPONENTS, first.stdout
    assert all(line.split()[1] == "ran" for line in lines.values()), first.stdout
    assert "val AUC 0." in lines["Trainer"] and "blessed" in lines["Evaluator"]
    assert "version 1" in lines["TwoTowerPusher"]
    assert "train 2,400 rows, eval 600 rows" in lines["StatisticsGen"]
    # the first line names the log file, which holds what TensorFlow, absl and Keras wrote
    logs = sorted((out / "logs").glob("run-*.log"))
    assert first.stdout.splitlines()[0] == f"finetower: logs in {logs[0]}"
    text = logs[0].read_text()
    assert "Component Trainer is finished." in text and "Epoch 1/2" in text
    assert "tensorflow" in text
    cached = progress_lines(pipeline_runs["second"].stdout)
    assert cached["Trainer"].split()[1] == "cached" and len(logs) >= 2


def test_both_towers_pushed_under_one_version_and_models_config_names_them(pipeline_runs):
    serving = pipeline_runs["out"] / "serving"
    assert sorted(os.listdir(serving / "user_tower")) == ["1"]
    assert sorted(os.listdir(serving / "item_tower")) == ["1"]
    config = text_format.Parse(
        (serving / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    names = {c.name: c for c in config.model_config_list.config}
    assert set(names) == {"user_tower", "item_tower"}
    for name, model in names.items():
        assert os.path.isabs(model.base_path)
        assert Path(model.base_path) == serving / name
        assert (Path(model.base_path) / "1" / "saved_model.pb").is_file()
        # explicit versions, written by ServingConfig once the version is published
        assert list(model.model_version_policy.specific.versions) == [1]


def test_folded_towers_reproduce_the_full_models_probability(pipeline_runs):
    from tests.pipeline_helpers import folded_and_full_probabilities

    data, serving = pipeline_runs["data"], pipeline_runs["out"] / "serving"
    cut = data["cut"]
    users, items = data["users"][cut : cut + 200], data["items"][cut : cut + 200]
    push = json.loads(
        (serving / "user_tower" / "1" / "assets.extra" / "finetower_push.json").read_text()
    )
    folded, probability = folded_and_full_probabilities(
        str(serving), push["model_uri"], users, items
    )
    np.testing.assert_allclose(folded, probability, atol=1e-5)


def test_one_embedding_per_distinct_item(pipeline_runs):
    data, out = pipeline_runs["data"], pipeline_runs["out"]
    folder = out / "item_embeddings" / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    table = pq.read_table(folder / "embeddings.parquet")
    assert manifest["version"] == 1 and manifest["dim"] == 64
    assert manifest["count"] == table.num_rows == distinct_rows(data["items"])
    ids = table.column("item_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert len(table.column("embedding")[0]) == 64


def test_second_run_is_cached_and_pushes_nothing_new(pipeline_runs):
    runs = executions_by_component(pipeline_runs["out"] / "metadata.sqlite")
    assert len(runs) == 2
    for component in ("RecipeCsvExampleGen", "StatisticsGen", "Transform", "Trainer"):
        assert runs[1][component] == "CACHED", runs[1]
    out = pipeline_runs["out"]
    assert sorted(os.listdir(out / "serving" / "user_tower")) == ["1"]
    assert sorted(os.listdir(out / "item_embeddings")) == ["1"]
    manifest = out / "item_embeddings" / "1" / "manifest.json"
    assert manifest.stat().st_mtime_ns == pipeline_runs["manifest_mtime"]  # not re-embedded
    assert "pushed version 1" in pipeline_runs["second"].stdout


def test_a_bad_line_fails_the_run_names_it_and_pushes_nothing(pipeline_runs, tmp_path):
    out = pipeline_runs["out"]
    config_before = (out / "serving" / "models.config").read_text()
    lines = pipeline_runs["data"]["train"].read_text().splitlines(keepends=True)
    fields = lines[41].split(",")
    fields[7] = "oops"
    lines[41] = ",".join(fields)
    bad = tmp_path / "bad" / "train.csv"
    bad.parent.mkdir()
    bad.write_text("".join(lines))
    result = run_local_runner(
        "--train_data",
        str(bad),
        "--val_data",
        str(pipeline_runs["data"]["eval"]),
        "--output_dir",
        str(out),
    )
    assert result.returncode != 0
    assert f"{bad}, line 42, field 8: 'oops' is not a number" in result.stderr
    assert "nothing was pushed" in result.stderr
    assert sorted(os.listdir(out / "serving" / "user_tower")) == ["1"]
    assert (out / "serving" / "models.config").read_text() == config_before
    assert latest_run_artifacts(str(out / "metadata.sqlite")).get("PushedModel") is None


@pytest.mark.skipif(tfx_cli() is None, reason="the tfx CLI is not installed beside this Python")
def test_tfx_cli_creates_and_runs_the_pipeline(tmp_path):
    """As the README runs it: venv activated, `tfx` from PATH."""
    data = small_recipe_files(tmp_path / "data", rows=2000, items=200)
    env = {
        **activated(),
        "LOCAL_HOME": str(tmp_path / "tfx_home"),
        "FINETOWER_OUTPUT_DIR": str(tmp_path / "out"),
        "FINETOWER_TRAIN_DATA": str(data["train"]),
        "FINETOWER_VAL_DATA": str(data["eval"]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    create = subprocess.run(
        [
            "tfx",
            "pipeline",
            "create",
            "--engine",
            "local",
            "--pipeline_path",
            "pipeline/local_runner.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert create.returncode == 0, create.stderr[-3000:]
    assert "built (not run)" in create.stdout
    run = subprocess.run(
        ["tfx", "run", "create", "--engine", "local", "--pipeline_name", "finetower"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "serving" / "user_tower" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "out" / "item_embeddings" / "1" / "embeddings.parquet").is_file()
