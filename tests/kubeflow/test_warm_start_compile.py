"""Warm start in the compiled jobs when it is off: `--warm_start none` compiles no
served-model step and no Trainer `base_model` on either target; `--base_model` feeds the
Trainer from an Importer instead (open-source KFP runs importer executors)."""

from __future__ import annotations

import json

import pytest
import yaml

from kubeflow.runner import compile_pipeline
from kubeflow.runner import main as runner_main
from pipeline.configs import PipelineConfig

IMAGE = "registry.example/finetower:1"


def compiled_tasks(tmp_path, **overrides) -> dict[str, dict]:
    """{"kfp": tasks of the YAML, "vertex": tasks of the JSON}."""
    config = PipelineConfig(
        train_data="gs://bucket/data/train/train.csv",
        output_dir="gs://bucket/finetower",
        **overrides,
    )
    paths = compile_pipeline(config, str(tmp_path), image=IMAGE)
    return {
        "kfp": yaml.safe_load(paths["yaml"].read_text())["root"]["dag"]["tasks"],
        "vertex": json.loads(paths["json"].read_text())["pipelineSpec"]["root"]["dag"]["tasks"],
    }


def test_warm_start_none_compiles_no_base_model_on_either_target(tmp_path):
    tasks = compiled_tasks(tmp_path, warm_start="none")
    for target in ("kfp", "vertex"):
        assert "base_model" not in tasks[target]["Trainer"]["inputs"]["artifacts"], target
        assert "served_model" not in tasks[target], target
    # the Evaluator keeps its baseline
    assert "latest_blessed_model" in tasks["kfp"]
    assert "latest_blessed_model_resolver-model-resolver" in tasks["vertex"]


def test_a_given_base_model_is_imported_instead_of_the_served_one(tmp_path):
    tasks = compiled_tasks(tmp_path, base_model="gs://bucket/models/7")
    for target in ("kfp", "vertex"):
        source = tasks[target]["Trainer"]["inputs"]["artifacts"]["base_model"]
        assert source["taskOutputArtifact"]["producerTask"] == "base_model_importer", target
        assert "served_model" not in tasks[target], target


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--warm_start", "sometimes"], "invalid choice"),
        (["--base_model", "/home/me/model"], "base model '/home/me/model' is a local path"),
    ],
)
def test_runner_flags_for_warm_start_are_checked(tmp_path, capsys, flags, refused):
    argv = ["--output_dir", str(tmp_path), "--image", IMAGE, "--train_data", "gs://b/t.csv"]
    argv += ["--pipeline_root", "gs://b/root", *flags]
    with pytest.raises(SystemExit) as stopped:
        runner_main(argv)
    assert refused in str(stopped.value) + capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("baseline_from", "warm"), [("vertex", True), ("resolver", False)])
def test_only_the_vertex_dag_warm_starts_from_tfx_resolver(tmp_path, baseline_from, warm):
    """The local "resolver" DAG (the MovieLens experiment: source, transfer and from-scratch
    runs) keeps the Resolver for the Evaluator only: its from-scratch run stays from scratch."""
    from pipeline.dag import create_pipeline

    config = PipelineConfig(output_dir=str(tmp_path))
    pipeline = create_pipeline(
        config, str(tmp_path / "train.csv"), None, None, baseline_from=baseline_from
    )
    (trainer,) = [c for c in pipeline.components if c.id == "Trainer"]
    assert ("base_model" in trainer.inputs) is warm
