"""Spans in the Kubeflow build (kubeflow/runner.py): `{SPAN}` patterns compile into the
ExampleGen step as the driver's input; a rolling window (a resolver node) is refused for the
cluster build (Vertex's compiler takes no resolver function, open-source KFP runs none), with
what to do instead: window 1 with warm start, yesterday's model carrying the past."""

from __future__ import annotations

import json

import pytest

from kubeflow.runner import compile_pipeline
from pipeline.configs import PipelineConfig

IMAGE = "example.com/finetower:test"


def span_config(window: int) -> PipelineConfig:
    return PipelineConfig(
        train_data="gs://bucket/data/span-{SPAN}/train.csv",
        val_data="gs://bucket/data/span-{SPAN}/eval.csv",
        output_dir="gs://bucket/finetower",
        window_spans=window,
    )


def test_span_patterns_compile_for_kfp(tmp_path):
    paths = compile_pipeline(span_config(1), str(tmp_path), image=IMAGE)
    text = paths["yaml"].read_text()
    assert "span-{SPAN}/train.csv" in text and "gs://bucket/data" in text
    assert "rolling_range" not in json.dumps(json.loads(paths["json"].read_text()))


@pytest.mark.parametrize("target", ["both", "vertex"])
def test_a_window_of_spans_is_refused_by_name_for_the_cluster(tmp_path, target):
    with pytest.raises(SystemExit, match="--window_spans 3: .*rolling_range") as refused:
        compile_pipeline(span_config(3), str(tmp_path), image=IMAGE, target=target)
    assert not list(tmp_path.iterdir())  # refused before anything is written
    message = str(refused.value)
    # why (each target's own reason) and what to do instead
    assert "Only single Channel is supported" in message
    assert "no resolver executors" in message
    assert "--window_spans 1" in message and "--warm_start served" in message
    assert "yesterday's model carries the earlier spans forward" in message
