"""The Kubeflow runner compiles the same DAG, touching nothing of the (remote) pipeline root;
the spec runs inside our image (code paths, artifact types); the image's Dockerfile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeflow import entrypoint
from kubeflow import image as image_config
from kubeflow.runner import REPO_ROOT, artifact_titles, compile_pipeline
from kubeflow.runner import main as runner_main
from pipeline.configs import PipelineConfig
from tests.pipeline_helpers import activated, tfx_cli

REPO = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/finetower:1"
TFX_CLI = tfx_cli()


def remote_config() -> PipelineConfig:
    return PipelineConfig(
        train_data="gs://bucket/data/train",
        val_data="gs://bucket/data/eval",
        output_dir="gs://bucket/finetower",
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kfp")
    paths = compile_pipeline(remote_config(), str(out), image=IMAGE)
    return {"paths": paths, "job": json.loads(paths["json"].read_text())}


def test_compiles_job_json_and_kfp_yaml_without_touching_the_pipeline_root(compiled):
    paths, job = compiled["paths"], compiled["job"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/finetower/tfx"
    # IR 2.1 (parameterValues, each step given its inputs spec): what open-source KFP v2 runs
    assert job["pipelineSpec"]["schemaVersion"] == "2.1.0"
    spec = yaml.safe_load(paths["yaml"].read_text())
    assert without_baseline(without_entrypoint_fix(spec)) == without_baseline(job["pipelineSpec"])
    executors = spec["deploymentSpec"]["executors"]
    for name in ("RecipeCsvExampleGen", "AnomaliesGate", "Transform", "Trainer", "TwoTowerPusher"):
        assert f"{name}_executor" in executors, sorted(executors)
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {IMAGE}
    assert "components.trainer.training.run_fn" in paths["json"].read_text()


# where the two builds differ: the Evaluator's baseline and the Trainer's warm start (Vertex:
# TFX's Resolver; open-source KFP: components/latest_blessed's steps)
DIFFERING = ("latest_blessed_model", "served_model")


def without_baseline(spec: dict) -> dict:
    """The spec without the Evaluator's baseline and the Trainer's warm start, which is where
    the two builds differ."""
    spec = json.loads(json.dumps(spec))
    for section in (spec["components"], spec["deploymentSpec"]["executors"]):
        for name in [n for n in section if n.startswith(DIFFERING)]:
            del section[name]
    tasks = spec["root"]["dag"]["tasks"]
    for name in [n for n in tasks if n.startswith(DIFFERING)]:
        del tasks[name]
    for task, key in (("Evaluator", "baseline_model"), ("Trainer", "base_model")):
        tasks[task]["inputs"]["artifacts"].pop(key)
        tasks[task]["dependentTasks"] = [
            t for t in tasks[task]["dependentTasks"] if not t.startswith(DIFFERING)
        ]
    return spec


def without_entrypoint_fix(spec: dict) -> dict:
    """The KFP YAML's spec with kubeflow.entrypoint's wrapping undone (TFX's as compiled)."""
    spec = json.loads(json.dumps(spec))
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if container and container["command"][-1] == "kubeflow.entrypoint":
            assert container["args"][0] == entrypoint.ARTIFACT_TYPES_FLAG
            container["command"][-1] = entrypoint.TFX_ENTRYPOINT
            container["args"] = container["args"][2:]
    return spec


def test_kfp_yaml_steps_carry_their_compiled_artifact_types(compiled):
    spec = yaml.safe_load(compiled["paths"]["yaml"].read_text())
    executors = spec["deploymentSpec"]["executors"]
    trainer = executors[spec["components"]["Trainer"]["executorLabel"]]["container"]
    assert trainer["command"] == ["python", "-m", "kubeflow.entrypoint"]
    types = json.loads(trainer["args"][1])
    definitions = spec["components"]["Trainer"]
    # base_model: the served_model step's Model (warm start, the default)
    assert set(types["inputs"]) == {"examples", "schema", "transform_graph", "base_model"}
    assert (
        types["outputs"]["model"]
        == (
            definitions["outputDefinitions"]["artifacts"]["model"]["artifactType"]["instanceSchema"]
        )
    )
    resolvers = [e for e in executors.values() if "resolver" in e]
    assert not resolvers  # open-source KFP runs none (tests/kubeflow/test_kubeflow_backends.py)


def _import_schema_gen_step(
    compiled, tmp_path: Path, *, fixed: bool
) -> subprocess.CompletedProcess:
    """ImportSchemaGen's container step run here as KFP would run it, its output artifact
    typed `system.Artifact` as the open-source KFP driver may pass it."""
    spec = yaml.safe_load(compiled["paths"]["yaml"].read_text())
    label = spec["components"]["ImportSchemaGen"]["executorLabel"]
    container = spec["deploymentSpec"]["executors"][label]["container"]
    if not fixed:
        container = without_entrypoint_fix(
            {"deploymentSpec": {"executors": {label: {"container": container}}}}
        )["deploymentSpec"]["executors"][label]["container"]
    executor_input = {
        "inputs": {"parameterValues": {"schema_file": str(REPO / "schema" / "schema.pbtxt")}},
        "outputs": {
            "artifacts": {
                "schema": {
                    "artifacts": [
                        {
                            "name": "schema",
                            "type": {"schemaTitle": "system.Artifact"},
                            "uri": str(tmp_path / "schema"),
                        }
                    ]
                }
            },
            "outputFile": str(tmp_path / "task" / "executor_output.json"),
        },
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    return subprocess.run(
        [sys.executable, *container["command"][1:], *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_entrypoint_restores_a_system_typed_artifact_where_tfxs_own_fails(compiled, tmp_path):
    stock = _import_schema_gen_step(compiled, tmp_path / "stock", fixed=False)
    assert stock.returncode != 0
    assert "Could not import system.Artifact" in stock.stderr

    done = _import_schema_gen_step(compiled, tmp_path / "fixed", fixed=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "fixed" / "schema" / "schema.pbtxt").is_file()
    output = json.loads((tmp_path / "fixed" / "task" / "executor_output.json").read_text())
    assert output["artifacts"]["schema"]["artifacts"][0]["uri"] == str(
        tmp_path / "fixed" / "schema"
    )


def test_entrypoint_leaves_properly_typed_artifacts_alone():
    typed = {"instanceSchema": "title: tfx.Examples\ntype: object\n"}
    executor_input = {
        "inputs": {"artifacts": {"examples": {"artifacts": [{"type": dict(typed)}]}}},
        "outputs": {"artifacts": {"model": {"artifacts": [{"type": {}}]}}},
    }
    compiled_types = {
        "inputs": {"examples": "title: tfx.Other\n"},
        "outputs": {"model": "title: tfx.Model\n"},
    }
    restored = entrypoint.restore_artifact_types(executor_input, compiled_types)
    assert restored["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == typed
    model = restored["outputs"]["artifacts"]["model"]["artifacts"][0]["type"]
    assert model == {"instanceSchema": "title: tfx.Model\n"}
    assert entrypoint.needs_type({"schemaTitle": "system.Model"})
    assert not entrypoint.needs_type({"schemaTitle": "tfx.Model"})


def test_files_of_this_checkout_are_named_by_their_path_inside_the_image(compiled):
    text = compiled["paths"]["json"].read_text()
    assert REPO_ROOT not in text
    tasks = compiled["job"]["pipelineSpec"]["root"]["dag"]["tasks"]
    schema_file = tasks["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"]
    value = schema_file["runtimeValue"]["constant"]  # IR 2.1
    assert value == f"{image_config.CODE_DIR}/schema/schema.pbtxt"


def test_every_artifact_type_turns_back_into_its_class_in_the_entrypoint(
    compiled, tmp_path, monkeypatch
):
    """What the container entrypoint does with each artifact it is given: the custom type
    `finetower.ItemEmbeddings` resolves through the image's `finetower` module."""
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry

    # the image copies kubeflow/artifact_types.py to <code dir>/finetower.py (Dockerfile)
    shutil.copy(REPO / "kubeflow" / "artifact_types.py", tmp_path / "finetower.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "finetower", raising=False)

    spec = compiled["job"]["pipelineSpec"]
    kinds = {}
    for component in spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                schema = artifact["artifactType"]["instanceSchema"]
                kinds[yaml.safe_load(schema)["title"]] = schema
    assert "finetower.ItemEmbeddings" in kinds
    assert set(kinds) == artifact_titles(spec)
    for title, schema in sorted(kinds.items()):
        runtime = pipeline_spec_pb2.RuntimeArtifact(uri="gs://bucket/x")
        runtime.type.instance_schema = schema
        artifacts = pipeline_spec_pb2.ArtifactList(artifacts=[runtime])
        parsed = entry.parse_raw_artifact_dict({"x": artifacts}, name_from_id={})["x"][0]
        expected = title if title.startswith("finetower.") else title[len("tfx.") :]
        assert parsed.type_name == expected, title


def test_dataflow_profile_runs_beam_steps_on_our_image(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETOWER_TRAIN_DATA", "gs://bucket/data/train")
    monkeypatch.setenv("FINETOWER_BEAM_PROJECT", "p")
    monkeypatch.setenv("FINETOWER_BEAM_REGION", "europe-west4")
    monkeypatch.setenv("FINETOWER_BEAM_TEMP_LOCATION", "gs://bucket/tmp")
    argv = ["--output_dir", str(tmp_path), "--image", IMAGE, "--pipeline_root", "gs://bucket/ft"]
    assert runner_main([*argv, "--beam_profile", "dataflow"]) == 0
    job = json.loads((tmp_path / "finetower.json").read_text())
    args = job["pipelineSpec"]["deploymentSpec"]["executors"]["StatisticsGen_executor"][
        "container"
    ]["args"]
    assert "--runner=DataflowRunner" in args
    assert f"--sdk_container_image={IMAGE}" in args
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/ft/tfx"


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **activated(),
        "VERTEX_HOME": str(tmp_path / "vertex_home"),
        "KUBEFLOW_HOME": str(tmp_path / "kubeflow_home"),
        "FINETOWER_TRAIN_DATA": "gs://bucket/data/train",
        "FINETOWER_VAL_DATA": "gs://bucket/data/eval",
        "FINETOWER_OUTPUT_DIR": "gs://bucket/finetower",
        "FINETOWER_IMAGE": IMAGE,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        ["tfx", "pipeline", "create", *args, "--pipeline_path", "kubeflow/runner.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(TFX_CLI is None, reason="the tfx CLI is not installed beside this Python")
def test_tfx_cli_vertex_engine_creates_the_pipeline(tmp_path):
    done = _cli("--engine", "vertex", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'Pipeline "finetower" created successfully.' in done.stdout
    folder = tmp_path / "vertex_home" / "finetower"
    job = json.loads((folder / "pipeline.json").read_text())  # the CLI's fixed name
    spec = yaml.safe_load((folder / "pipeline.yaml").read_text())
    assert without_baseline(without_entrypoint_fix(spec)) == without_baseline(job["pipelineSpec"])
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert executors["Trainer_executor"]["container"]["image"] == IMAGE
    assert REPO_ROOT not in (folder / "pipeline.json").read_text()


@pytest.mark.skipif(TFX_CLI is None, reason="the tfx CLI is not installed beside this Python")
def test_tfx_cli_kubeflow_engine_fails_on_the_removed_kfp_v1_runner(tmp_path):
    """Upstream TFX 1.21: the kubeflow handler imports the KFP v1 runner it no longer ships.
    When this test fails, TFX fixed it: update the README."""
    done = _cli("--engine", "kubeflow", "--endpoint", "http://127.0.0.1:9", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "cannot import name 'kubeflow_dag_runner'" in done.stderr


# -- the image -------------------------------------------------------------------------------

DOCKERFILE = REPO / "kubeflow" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_dockerfile_builds_on_the_official_tfx_image_with_our_code_and_pins():
    steps = _instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kind, a in steps if kind == "ARG"}
    assert args["TFX_IMAGE"] == image_config.TFX_BASE_IMAGE == "tensorflow/tfx:1.21.0"
    assert [a for kind, a in steps if kind == "FROM"] == ["${TFX_IMAGE}"]
    copies = [a.split() for kind, a in steps if kind == "COPY"]
    for folder in ("pipeline/", "components/", "schema/", "serving/"):
        assert [folder, f"{image_config.CODE_DIR}/{folder}"] in copies, copies
    assert ["kubeflow/artifact_types.py", f"{image_config.CODE_DIR}/finetower.py"] in copies
    assert ("WORKDIR", image_config.CODE_DIR) in steps
    env = " ".join(a for kind, a in steps if kind == "ENV")
    assert f"PYTHONPATH={image_config.CODE_DIR}" in env and "TF_USE_LEGACY_KERAS=1" in env

    runs = " ".join(a for kind, a in steps if kind == "RUN")
    assert "pip install --no-cache-dir -r /tmp/requirements-image.txt" in runs
    assert ["kubeflow/requirements-image.txt", "/tmp/requirements-image.txt"] in copies
    image_pins = _pins(REPO / "kubeflow" / "requirements-image.txt")
    project_pins = _pins(REPO / "requirements.txt")
    assert {"tf-keras", "tensorboard", "pyfarmhash"} <= set(image_pins)
    for name, version in image_pins.items():
        assert project_pins.get(name) == version, name  # the same versions as requirements.txt


def test_dockerfile_fetches_no_models_or_data():
    steps = _instructions()
    assert not [a for kind, a in steps if kind == "ADD"]  # ADD can fetch URLs; COPY cannot
    runs = " ".join(a for kind, a in steps if kind == "RUN").lower()
    for fetcher in ("curl", "wget", "gsutil", "gcloud", "huggingface", "http://", "https://"):
        assert fetcher not in runs, fetcher


def test_image_name_is_configuration():
    assert image_config.default_image({}) == f"finetower:{image_config.IMAGE_TAG}"
    assert image_config.default_image({"FINETOWER_IMAGE_TAG": "7"}) == "finetower:7"
    assert image_config.default_image({"FINETOWER_IMAGE": "r/x:y"}) == "r/x:y"
    project_version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert project_version.group(1) == image_config.IMAGE_TAG
