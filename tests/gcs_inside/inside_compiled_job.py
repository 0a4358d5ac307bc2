"""Run inside the GCS namespace only (tests/gcs_emulator.py; started by
tests/test_kubeflow_offline_run.py): the compiled open-source KFP YAML, every step run as
KFP's launcher runs it (tests/kfp_launcher.py), pipeline root and data on the emulated bucket."""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

BUCKET = os.environ.get("FINETOWER_GCS_TEST_BUCKET")
pytestmark = pytest.mark.skipif(BUCKET is None, reason="runs inside tests/gcs_emulator.py only")


def test_every_compiled_step_runs_and_the_towers_reach_the_serving_dir(tmp_path):
    import tensorflow as tf

    from kubeflow.runner import compile_pipeline
    from pipeline.configs import PipelineConfig
    from tests.kfp_launcher import run_compiled
    from tests.pipeline_helpers import small_recipe_files

    data = small_recipe_files(tmp_path / "data")
    root = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    for split, local in (("train", data["train"]), ("eval", data["eval"])):
        tf.io.gfile.makedirs(f"{root}/data/{split}")
        tf.io.gfile.copy(str(local), f"{root}/data/{split}/{split}.csv")
    config = PipelineConfig(
        train_data=f"{root}/data/train/train.csv",
        val_data=f"{root}/data/eval/eval.csv",
        output_dir=f"{root}/out",
    )
    paths = compile_pipeline(config, str(tmp_path / "kfp"), image="finetower:offline")
    spec = yaml.safe_load(paths["yaml"].read_text())

    results = run_compiled(spec, spec["defaultPipelineRoot"], tmp_path / "steps")
    serving = f"{root}/out/serving"
    towers = {
        t: tf.io.gfile.exists(f"{serving}/{t}/1/saved_model.pb")
        for t in ("user_tower", "item_tower")
    }
    failed = [r for r in results if r.returncode != 0]
    ran = [r.task for r in results]
    assert not failed, (
        f"ran {ran}; {failed[0].task} failed (towers pushed: {towers}):\n"
        + failed[0].stderr[-4000:]
    )
    assert sorted(ran) == sorted(spec["root"]["dag"]["tasks"])
    assert towers == {"user_tower": True, "item_tower": True}
    for result in results:
        for artifacts in result.outputs.values():
            for artifact in artifacts:
                assert artifact["uri"].startswith(f"{root}/out/tfx/finetower/"), artifact
