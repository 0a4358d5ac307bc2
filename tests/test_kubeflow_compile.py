"""The Kubeflow runner compiles the same DAG, touching nothing of the (remote) pipeline root."""

from __future__ import annotations

import json

import yaml

from kubeflow.runner import compile_pipeline
from pipeline.configs import PipelineConfig


def test_compiles_job_json_and_kfp_yaml_without_touching_the_pipeline_root(tmp_path):
    config = PipelineConfig(
        train_data="gs://bucket/data/train",
        val_data="gs://bucket/data/eval",
        output_dir="gs://bucket/finetower",
    )
    paths = compile_pipeline(config, str(tmp_path), image="registry.example/finetower:1")

    job = json.loads(paths["json"].read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/finetower/tfx"
    spec = yaml.safe_load(paths["yaml"].read_text())
    assert spec == job["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    for name in ("RecipeCsvExampleGen", "AnomaliesGate", "Transform", "Trainer", "TwoTowerPusher"):
        assert f"{name}_executor" in executors, sorted(executors)
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"registry.example/finetower:1"}
    assert "components.trainer.training.run_fn" in paths["json"].read_text()
