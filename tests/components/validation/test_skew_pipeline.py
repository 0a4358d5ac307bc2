"""`python -m pipeline.local_runner --serving_log DIR` on LocalDagRunner: SkewCheck records a
skewed dimension by its feature name in ML Metadata and the run still pushes (it gates
nothing); the configured user-vector recipe reaches the published version's manifest."""

from __future__ import annotations

import json

import numpy as np
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx

from serving.recall.skew_log import write_log_file
from tests.pipeline_helpers import run_local_runner, small_recipe_files

SHIFTED = 6  # 0-based: the log's feature u7


def skew_records(metadata: str) -> list[dict]:
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata)
    )
    records = []
    for artifact in store.get_artifacts_by_type("ExampleAnomalies"):
        properties = artifact.custom_properties
        if "skew_over_threshold" in properties:
            records.append(
                {
                    "feature": properties["skew_feature"].string_value,
                    "distance": properties["skew_distance"].double_value,
                    "over": properties["skew_over_threshold"].int_value,
                    "message": properties["skew_message"].string_value,
                    "rows": properties["serving_rows"].int_value,
                }
            )
    return records


def test_a_skewed_serving_log_is_recorded_by_feature_and_the_run_still_pushes(tmp_path):
    data = small_recipe_files(tmp_path / "data", rows=1500, items=150)
    users = data["users"][data["cut"] :].astype(np.float32)
    logged = users.copy()
    logged[:, SHIFTED] += 5 * users[:, SHIFTED].std() + 1.0
    log_dir = tmp_path / "serving-log"
    log_dir.mkdir()
    write_log_file(log_dir, "t-000000", 1, list(logged))
    out = tmp_path / "out"
    done = run_local_runner(
        "--train_data",
        str(data["train"]),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(out),
        "--serving_log",
        str(log_dir),
        "--epochs",
        "1",
        env={"FINETOWER_USER_VECTOR_LAST_N": "3"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (record,) = skew_records(str(out / "metadata.sqlite"))
    assert record["over"] == 1 and record["feature"] == f"u{SHIFTED + 1}"
    assert record["rows"] == len(logged) and record["distance"] > 0.1
    assert f"feature 'u{SHIFTED + 1}'" in record["message"]
    # skew is recorded, not a gate: the version was pushed and published with its recipe
    assert (out / "serving" / "user_tower" / "1" / "saved_model.pb").exists()
    manifest = json.loads((out / "ann_index" / "1" / "manifest.json").read_text())
    assert manifest["user_vector_recipe"]["last_n"] == 3
    assert manifest["user_vector_recipe"]["dim"] == 128
