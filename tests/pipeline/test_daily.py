"""Daily spans on LocalDagRunner, as `python -m pipeline.local_runner` runs them: each run
ingests only the new span, Transform/Trainer see the window from ML Metadata, the Trainer
starts from the served model, a worse model is not pushed, a drifted span stops the run before
Transform naming the feature (pipeline/dag.py, components/served_model,
components/validation/drift.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv
from tests.pipeline.test_pipeline_e2e import executions_by_component
from tests.pipeline.test_spans import last_execution_spans
from tests.pipeline_helpers import run_local_runner

DIM = 8
ROWS = 3000  # a span
SPANS = 4


@pytest.fixture(scope="module")
def world():
    """One hidden rule and catalogue; span k is the k-th slice of its samples."""
    return demo_samples(DemoData(rows=ROWS * SPANS, items=300, user_dim=DIM, item_dim=DIM))


def write_span(root: Path, world, span: int, user_shift: float = 0.0) -> None:
    labels, users, items, _ = world
    rows = slice((span - 1) * ROWS, span * ROWS)
    labels, users, items = labels[rows], users[rows] + user_shift, items[rows]
    cut = int(ROWS * 0.8)
    folder = root / f"span-{span}"
    write_recipe_csv(folder / "train.csv", labels[:cut], users[:cut], items[:cut])
    write_recipe_csv(folder / "eval.csv", labels[cut:], users[cut:], items[cut:])


def run_day(root: Path, *extra: str):
    data = root / "data"
    return run_local_runner(
        "--train_data", str(data / "span-{SPAN}" / "train.csv"),
        "--val_data", str(data / "span-{SPAN}" / "eval.csv"),
        "--output_dir", str(root / "out"),
        "--user_dim", str(DIM), "--item_dim", str(DIM),
        "--window_spans", "2", "--epochs", "8", "--auc_floor", "0.5",
        *extra,
    )  # fmt: skip


def trainer_info(out: Path) -> dict:
    """finetower_model.json of the newest Trainer output."""
    models = sorted((out / "tfx" / "Trainer" / "model").iterdir(), key=lambda p: int(p.name))
    return json.loads((models[-1] / "finetower_model.json").read_text())


def served_versions(out: Path) -> list[str]:
    return sorted((out / "serving" / "user_tower").iterdir(), key=lambda p: int(p.name))


def spans_seen(out: Path):
    """(spans ExampleGen wrote, spans the Trainer read, ExampleGen cached) of the last run."""
    return last_execution_spans(
        str(out / "metadata.sqlite"), "RecipeCsvExampleGen", "Trainer", "finetower"
    )


def tower_weights(model_dir: Path) -> list[np.ndarray]:
    import tf_keras as keras

    model = keras.models.load_model(str(model_dir / "Format-Serving"), compile=False)
    return [w for name in ("user_tower", "item_tower", "output") for w in
            model.get_layer(name).get_weights()]  # fmt: skip


@pytest.fixture(scope="module")
def days(tmp_path_factory, world):
    root = tmp_path_factory.mktemp("daily")
    out = root / "out"
    results = {}
    write_span(root / "data", world, 1)
    results[1] = run_day(root)
    assert results[1].returncode == 0, results[1].stderr[-3000:]
    results["info1"] = trainer_info(out)
    results["windows1"] = spans_seen(out)
    write_span(root / "data", world, 2)
    # learning rate 0: the model trained today is exactly the served one it started from
    results[2] = run_day(root, "--learning_rate", "0")
    assert results[2].returncode == 0, results[2].stderr[-3000:]
    results["info2"] = trainer_info(out)
    results["windows2"] = spans_seen(out)
    write_span(root / "data", world, 3)
    # from initialisation and never trained: worse than what is served
    results[3] = run_day(root, "--warm_start", "none", "--learning_rate", "0")
    results["windows3"] = spans_seen(out)
    write_span(root / "data", world, 4, user_shift=0.5)
    results[4] = run_day(root)
    results["root"] = root
    return results


def test_each_day_ingests_only_its_span_and_trains_on_the_window(days):
    assert days["windows1"] == ([1], [1], False)
    assert days["windows2"] == ([2], [1, 2], False)
    assert days["windows3"] == ([3], [2, 3], False)


def test_the_trainer_starts_from_the_served_model(days):
    assert days["info1"]["warm_start"] is None
    record = days["info2"]["warm_start"]
    out = days["root"] / "out"
    models = sorted((out / "tfx" / "Trainer" / "model").iterdir(), key=lambda p: int(p.name))
    first, second = models[0], models[1]
    assert record["base_model"] == str(first / "Format-Serving")
    assert 0.5 < record["val_before_training"]["val_auc"] <= 1.0
    assert record["base_model_val"]["val_auc"] > 0.5
    # learning rate 0: not one weight moved from the served model's
    for a, b in zip(tower_weights(first), tower_weights(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "pushed version 2" in days[2].stdout


def test_a_worse_model_is_not_pushed_and_the_served_version_stays(days):
    assert days[3].returncode == 0, days[3].stderr[-3000:]
    assert "blessed: no" in days[3].stdout
    out = days["root"] / "out"
    assert [p.name for p in served_versions(out)] == ["1", "2"]


def test_a_drifted_span_stops_the_run_before_transform_naming_the_feature(days):
    assert days[4].returncode == 1
    assert "feature 'user_vector'" in days[4].stderr, days[4].stderr[-3000:]
    assert "jensen_shannon" in days[4].stderr.lower()
    last = executions_by_component(days["root"] / "out" / "metadata.sqlite")[-1]
    assert last["DriftGate"] == "COMPLETE"  # the record is in ML Metadata
    assert last["DriftCheck"] == "FAILED"
    assert "Transform" not in last and "Trainer" not in last
    assert [p.name for p in served_versions(days["root"] / "out")] == ["1", "2"]
