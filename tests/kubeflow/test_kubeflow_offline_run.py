"""The whole compiled open-source KFP job run offline, as the cluster runs it: each step's
executor input built from the spec, its container command in a subprocess, the pipeline root on
a GCS API server (tests/gcs_emulator.py, tests/kfp_launcher.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.gcs_emulator import run_pytest_in_gcs, skip_reason
from tests.kfp_launcher import dag_order, executor_input


def test_launcher_builds_the_executor_input_kfp_would(tmp_path):
    """Cheap: the executor input of the Evaluator from a compiled YAML, without running."""
    from kubeflow.runner import compile_pipeline
    from pipeline.configs import PipelineConfig

    config = PipelineConfig(train_data="gs://b/d/t.csv", output_dir="gs://b/o")
    spec = yaml.safe_load(compile_pipeline(config, str(tmp_path), image="i:1")["yaml"].read_text())
    order = dag_order(spec)
    assert order.index("Trainer") < order.index("latest_blessed_model") < order.index("Evaluator")
    assert order.index("TwoTowerPusher") < order.index("ItemEmbeddings")
    produced = {
        task: {key: [{"name": f"{task}-{key}", "uri": f"gs://r/{task}/{key}"}] for key in keys}
        for task, keys in (
            ("RecipeCsvExampleGen", ["examples"]),
            ("Trainer", ["model"]),
            ("latest_blessed_model", ["baseline"]),
        )
    }
    given = executor_input(spec, "Evaluator", produced, {}, "gs://r", "/tmp/out.json")
    baseline = given["inputs"]["artifacts"]["baseline_model"]["artifacts"]
    assert baseline == [
        {"name": "latest_blessed_model-baseline", "uri": "gs://r/latest_blessed_model/baseline"}
    ]
    assert given["outputs"]["artifacts"]["evaluation"]["artifacts"][0]["uri"] == (
        "gs://r/Evaluator/evaluation"
    )
    pusher = executor_input(
        spec,
        "latest_blessed_model",
        {"Trainer": produced["Trainer"]},
        {"serving_dir": "gs://x/s"},
        "gs://r",
        "/o",
    )
    assert pusher["inputs"]["parameterValues"] == {"serving_dir": "gs://x/s"}


@pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))
def test_the_compiled_job_runs_offline_step_by_step():
    done = run_pytest_in_gcs("tests/gcs_inside/inside_compiled_job.py", timeout=3600)
    summary = re.findall(r"^(?:FAILED|ERROR) .*$", done.stdout, flags=re.MULTILINE)
    assert done.returncode == 0, "\n".join(summary) + "\n" + done.stdout[-20000:]
    # 3 tests, all passed: every compiled step completes, towers and index on the bucket, the
    # first run's Trainer trained from initialisation (nothing served yet) and recorded why
    assert re.search(r"\b3 passed\b", done.stdout), done.stdout[-3000:]
