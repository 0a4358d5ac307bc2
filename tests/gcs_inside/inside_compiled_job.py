"""Run inside the GCS namespace only (tests/gcs_emulator.py; started by
tests/kubeflow/test_kubeflow_offline_run.py): the compiled open-source KFP YAML, every step run as
KFP's launcher runs it (tests/kfp_launcher.py), pipeline root and data on the emulated bucket."""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

BUCKET = os.environ.get("FINETOWER_GCS_TEST_BUCKET")
pytestmark = pytest.mark.skipif(BUCKET is None, reason="runs inside tests/gcs_emulator.py only")
TOWERS = ("user_tower", "item_tower")


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory) -> dict:
    import tensorflow as tf

    from kubeflow.runner import compile_pipeline
    from pipeline.configs import PipelineConfig
    from tests.kfp_launcher import run_compiled
    from tests.pipeline_helpers import small_recipe_files

    local = tmp_path_factory.mktemp("compiled_job")
    data = small_recipe_files(local / "data")
    root = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    for split, path in (("train", data["train"]), ("eval", data["eval"])):
        tf.io.gfile.makedirs(f"{root}/data/{split}")
        tf.io.gfile.copy(str(path), f"{root}/data/{split}/{split}.csv")
    config = PipelineConfig(
        train_data=f"{root}/data/train/train.csv",
        val_data=f"{root}/data/eval/eval.csv",
        output_dir=f"{root}/out",
    )
    paths = compile_pipeline(config, str(local / "kfp"), image="finetower:offline")
    spec = yaml.safe_load(paths["yaml"].read_text())
    results = run_compiled(spec, spec["defaultPipelineRoot"], local / "steps")
    serving = f"{root}/out/serving"
    return {
        "spec": spec,
        "root": root,
        "results": results,
        "towers": {t: tf.io.gfile.exists(f"{serving}/{t}/1/saved_model.pb") for t in TOWERS},
    }


def _failure(run: dict) -> str:
    failed = [r for r in run["results"] if r.returncode != 0]
    if not failed:
        return ""
    ran = [r.task for r in run["results"]]
    return f"ran {ran}; {failed[0].task} failed:\n{failed[0].stderr[-4000:]}"


def test_steps_through_the_pusher_run_and_the_towers_reach_the_serving_dir(compiled_run):
    completed = {r.task for r in compiled_run["results"] if r.returncode == 0}
    through_push = {
        "ImportSchemaGen", "RecipeCsvExampleGen", "StatisticsGen", "ExampleValidator",
        "AnomaliesGate", "Transform", "Trainer", "latest_blessed_model", "Evaluator",
        "TwoTowerPusher",
    }  # fmt: skip
    assert through_push <= completed, _failure(compiled_run)
    assert compiled_run["towers"] == {"user_tower": True, "item_tower": True}
    for result in compiled_run["results"]:
        for artifacts in result.outputs.values():
            for artifact in artifacts:  # under the run's folder of the pipeline root
                assert artifact["uri"].startswith(f"{compiled_run['root']}/out/tfx/finetower/")


# Measured 2026-12-07 (main @ ba01f92 + h4): 11 of 12 steps complete; EmbeddingsPublisher fails
# with "gs:/<bucket>/.../item_embeddings/1 holds no embeddings.parquet" (pathlib collapses
# gs:// to gs:/; issue 19 point 2, another branch's fix). Remove the mark once that lands.
def test_every_compiled_step_runs(compiled_run):
    assert not _failure(compiled_run), _failure(compiled_run)
    ran = sorted(r.task for r in compiled_run["results"])
    assert ran == sorted(compiled_run["spec"]["root"]["dag"]["tasks"])


def test_first_run_trains_from_initialisation_and_says_why(compiled_run):
    """The served_model step found nothing pushed (an empty serving dir): its Model is marked
    found=0 and the Trainer started from Keras' initialisation, as finetower_model.json says."""
    import json

    import tensorflow as tf

    by_task = {r.task: r for r in compiled_run["results"]}
    assert "served_model" in by_task and "Trainer" in by_task, _failure(compiled_run)
    (served,) = by_task["served_model"].outputs["model"]
    assert served["metadata"]["found"] == 0
    (model,) = by_task["Trainer"].outputs["model"]
    with tf.io.gfile.GFile(f"{model['uri']}/finetower_model.json") as f:
        warm_start = json.load(f)["warm_start"]
    serving = f"{compiled_run['root']}/out/serving"
    assert warm_start == {"base_model": None, "served_model": {"found": 0, "serving_dir": serving}}
