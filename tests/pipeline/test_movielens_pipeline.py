"""One LocalDagRunner run of the MovieLens transfer experiment on a small subset of ml-100k:
source DAG (Item2Vec -> SampleGen -> DSSM) then the transfer DAG (fine-tuned from the source
model, with retrieval evaluation); skips without ml-100k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.pipeline_helpers import REPO


def test_movielens_transfer_runs_and_reports(ml100k, tmp_path):
    out = tmp_path / "out"
    # the runner sets the legacy-Keras switch itself, where its process starts
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    args = ["--data", str(ml100k), "--output_dir", str(out), "--max_users", "120"]
    args += ["--dim", "16", "--item2vec_epochs", "2", "--min_count", "2"]
    args += ["--source_epochs", "1", "--target_epochs", "2", "--no_scratch"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.movielens_runner", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| transfer | towers |" in done.stdout and "HR@50 towers over popularity" in done.stdout

    summary = json.loads((out / "summary.json").read_text())
    logs = summary["logs"]
    source, target = pq.read_table(logs["source"]), pq.read_table(logs["target"])
    assert source.num_rows + target.num_rows == logs["source_events"] + logs["target_events"]
    assert len(set(source["user"].to_pylist()) | set(target["user"].to_pylist())) <= 120
    assert summary["item2vec"]["dim"] == 16 and summary["item2vec"]["count"] > 100

    transfer = summary["runs"]["transfer"]
    # fine-tuned from the source run's model
    assert transfer["training"]["base_model"].startswith(summary["source_model"])
    metrics = transfer["metrics"]
    assert set(metrics["methods"]) == {"towers", "popularity", "pretrained"}
    assert metrics["ks"] == [10, 20, 50, 100]
    assert 0.0 <= metrics["methods"]["towers"]["hit_rate@50"] <= 1.0
    # what a user saw before the query, in the source domain too, left every ranking
    assert "every domain" in metrics["protocol"]["seen_items_excluded"]
    assert metrics["protocol"]["history_events_before_query_excluded"] > 0
    assert metrics["ann"]["backend"] == "ivf" and metrics["ann"]["recall@10"] > 0.5
    report = transfer["report"]
    assert "HitRate" in Path(report).read_text()
    assert os.path.exists(os.path.join(os.path.dirname(report), "recall.png"))
    assert (out / "report.md").exists()

    for run in ("source", "transfer"):
        serving = out / run / "serving"
        assert (serving / "user_tower" / "1" / "saved_model.pb").exists()
        assert (serving / "item_tower" / "1" / "saved_model.pb").exists()
    # the served item embeddings are the catalogue's: every item with a pretrained vector
    manifest = json.loads(
        (out / "transfer" / "item_embeddings" / "1" / "manifest.json").read_text()
    )
    assert manifest["count"] == metrics["protocol"]["catalogue_items"]
    assert manifest["unmatched_training_items"] == 0
