"""What each backend is given: open-source KFP a YAML of container and importer steps only
(the Evaluator's baseline from components/latest_blessed), Vertex a JSON with TFX's Resolver;
paths checked at compile time and decided at run time (kubeflow/paths.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from kubeflow.runner import compile_pipeline
from kubeflow.runner import main as runner_main
from pipeline.configs import PipelineConfig

IMAGE = "registry.example/finetower:1"
# what the open-source KFP 2.x Argo compiler executes (backend/src/v2/compiler/argocompiler);
# it answers "resolver executors not implemented" and "custom job executors is Google Cloud
# only" for the other kinds of the IR's PipelineDeploymentConfig.ExecutorSpec
OPEN_SOURCE_KFP_EXECUTORS = {"container", "importer"}


def remote_config(**overrides) -> PipelineConfig:
    values = dict(
        train_data="gs://bucket/data/train/train.csv",
        val_data="gs://bucket/data/eval/eval.csv",
        output_dir="gs://bucket/finetower",
    )
    return PipelineConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    paths = compile_pipeline(remote_config(), str(tmp_path_factory.mktemp("kfp")), image=IMAGE)
    return {
        "vertex": json.loads(paths["json"].read_text()),
        "kfp": yaml.safe_load(paths["yaml"].read_text()),
    }


def executor_kinds(spec: dict) -> dict[str, set[str]]:
    """executor kind -> executor labels, as the IR's ExecutorSpec oneof names them."""
    kinds: dict[str, set[str]] = {}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        for kind in executor:
            kinds.setdefault(kind, set()).add(label)
    return kinds


def test_open_source_kfp_yaml_holds_only_executors_its_backend_runs(compiled):
    kinds = executor_kinds(compiled["kfp"])
    assert set(kinds) <= OPEN_SOURCE_KFP_EXECUTORS, kinds
    tasks = compiled["kfp"]["root"]["dag"]["tasks"]
    evaluator = tasks["Evaluator"]["inputs"]["artifacts"]["baseline_model"]
    assert evaluator["taskOutputArtifact"] == {
        "producerTask": "latest_blessed_model",
        "outputArtifactKey": "baseline",
    }
    baseline = tasks["latest_blessed_model"]
    assert baseline["cachingOptions"] == {"enableCache": False}  # reads the serving dir
    assert baseline["inputs"]["parameters"]["serving_dir"] == {
        "componentInputParameter": "serving_dir"
    }


def test_open_source_kfp_trainer_warm_starts_from_the_served_model_step(compiled):
    tasks = compiled["kfp"]["root"]["dag"]["tasks"]
    assert tasks["Trainer"]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"] == {
        "producerTask": "served_model",
        "outputArtifactKey": "model",
    }
    served = tasks["served_model"]
    assert served["cachingOptions"] == {"enableCache": False}  # reads the serving dir
    assert served["inputs"]["parameters"]["serving_dir"] == {
        "componentInputParameter": "serving_dir"
    }
    assert "artifacts" not in served["inputs"]  # runs before the Trainer, needs nothing


def test_vertex_trainer_warm_starts_from_tfx_latest_blessed_model_resolver(compiled):
    tasks = compiled["vertex"]["pipelineSpec"]["root"]["dag"]["tasks"]
    resolver = "latest_blessed_model_resolver-model-resolver"
    for task, key in (("Trainer", "base_model"), ("Evaluator", "baseline_model")):
        source = tasks[task]["inputs"]["artifacts"][key]["taskOutputArtifact"]
        assert source == {"producerTask": resolver, "outputArtifactKey": "model"}
    assert resolver in tasks["Trainer"]["dependentTasks"]
    assert "served_model" not in tasks


def test_vertex_json_keeps_tfx_resolver(compiled):
    kinds = executor_kinds(compiled["vertex"]["pipelineSpec"])
    assert kinds["resolver"] == {
        "latest_blessed_model_resolver-model-blessing-resolver_executor",
        "latest_blessed_model_resolver-model-resolver_executor",
    }
    assert "latest_blessed_model" not in compiled["vertex"]["pipelineSpec"]["root"]["dag"]["tasks"]


def test_one_compiled_job_serves_several_environments(compiled):
    """Pipeline root, serving dir and output dir are the run's; compiled values are defaults."""
    job, spec = compiled["vertex"], compiled["kfp"]
    for pipeline_spec in (spec, job["pipelineSpec"]):
        assert pipeline_spec["defaultPipelineRoot"] == "gs://bucket/finetower/tfx"
        declared = pipeline_spec["root"]["inputDefinitions"]["parameters"]
        assert declared["serving_dir"]["defaultValue"] == "gs://bucket/finetower/serving"
        assert declared["output_dir"]["defaultValue"] == "gs://bucket/finetower"
        tasks = pipeline_spec["root"]["dag"]["tasks"]
        pusher = tasks["TwoTowerPusher"]["inputs"]["parameters"]["serving_dir"]
        assert pusher == {"componentInputParameter": "serving_dir"}
        embeddings = tasks["ItemEmbeddings"]["inputs"]["parameters"]["output_dir"]
        assert embeddings == {"componentInputParameter": "output_dir"}
    assert job["runtimeConfig"]["parameterValues"] == {
        "serving_dir": "gs://bucket/finetower/serving",
        "output_dir": "gs://bucket/finetower",
    }
    # no step has the serving dir compiled in: only the parameter's default names it
    assert json.dumps(spec).count('"gs://bucket/finetower/serving"') == 1
    assert json.dumps(job).count('"gs://bucket/finetower/serving"') == 2  # + runtimeConfig


def test_split_patterns_in_the_compiled_example_gen(compiled):
    tasks = compiled["kfp"]["root"]["dag"]["tasks"]
    parameters = tasks["RecipeCsvExampleGen"]["inputs"]["parameters"]
    assert parameters["input_base"]["runtimeValue"]["constant"] == "gs://bucket/data"
    splits = json.loads(parameters["input_config"]["runtimeValue"]["constant"])["splits"]
    assert splits == [
        {"name": "train", "pattern": "train/train.csv"},
        {"name": "eval", "pattern": "eval/eval.csv"},
    ]


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        ({"output_dir": "out"}, ["pipeline root, serving and output dirs", "--pipeline_root gs://"]),
        ({"train_data": "/data/train.csv"}, ["train data '/data/train.csv'", "--train_data"]),
        ({"val_data": "file:///data/e.csv", "items": "items.csv"}, ["eval data", "item catalogue"]),
        ({"train_data": None}, ["embedded demo data"]),
    ],
)  # fmt: skip
def test_local_paths_are_refused_with_what_to_pass(overrides, messages, tmp_path):
    with pytest.raises(SystemExit) as refused:
        compile_pipeline(remote_config(**overrides), str(tmp_path), image=IMAGE)
    for message in messages:
        assert message in str(refused.value)
    assert not list(tmp_path.iterdir())  # nothing compiled


def test_runner_refuses_the_default_local_output_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FINETOWER_OUTPUT_DIR", raising=False)
    argv = ["--output_dir", str(tmp_path), "--train_data", "gs://b/t.csv", "--image", IMAGE]
    with pytest.raises(SystemExit) as refused:
        runner_main(argv)
    assert "'finetower-output' is a local path" in str(refused.value)


def test_every_step_requests_cpu_and_memory_from_the_configuration(compiled):
    for spec in (compiled["kfp"], compiled["vertex"]["pipelineSpec"]):
        executors = spec["deploymentSpec"]["executors"]
        trainer = executors[spec["components"]["Trainer"]["executorLabel"]]["container"]
        assert trainer["resources"]["resourceCpuRequest"] == "4"
        assert trainer["resources"]["resourceMemoryRequest"] == "16G"
        assert trainer["resources"]["memoryLimit"] == 16.0
        containers = [e["container"] for e in executors.values() if "container" in e]
        assert all("resourceMemoryRequest" in c["resources"] for c in containers)


def test_resources_from_the_environment(monkeypatch, tmp_path):
    from kubeflow.resources import memory_gb, resources_from_environment

    monkeypatch.setenv("FINETOWER_RESOURCES", '{"Trainer": {"memory": "512Mi"}, "X": {"cpu": "3"}}')
    found = resources_from_environment()
    assert found["Trainer"] == {"cpu": "4", "memory": "512Mi"}
    assert found["X"] == {"cpu": "3", "memory": "2G"}
    assert memory_gb("512Mi") == pytest.approx(0.536870912)
    monkeypatch.setenv("FINETOWER_RESOURCES", '{"Trainer": {"gpu": "1"}}')
    with pytest.raises(SystemExit, match="unknown keys"):
        resources_from_environment()


def test_example_gen_declares_no_gzip_for_its_uncompressed_files(compiled):
    from tfx.proto import example_gen_pb2

    tasks = compiled["kfp"]["root"]["dag"]["tasks"]
    declared = tasks["RecipeCsvExampleGen"]["inputs"]["parameters"]["output_file_format"]
    assert declared["runtimeValue"]["constant"] == example_gen_pb2.FILE_FORMAT_UNSPECIFIED


def test_multi_worker_is_refused_where_a_trainer_is_one_pod(tmp_path):
    config = remote_config(distribution="multi_worker")
    with pytest.raises(SystemExit, match="only Vertex provides") as refused:
        compile_pipeline(config, str(tmp_path), image=IMAGE)
    assert "--target vertex" in str(refused.value)
    assert not list(tmp_path.iterdir())

    from pipeline.local_runner import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--distribution", "multi_worker", "--output_dir", str(tmp_path)])


def test_multi_worker_compiles_vertex_worker_pools(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETOWER_VERTEX_PROJECT", "p")
    monkeypatch.setenv("FINETOWER_VERTEX_REGION", "europe-west4")
    monkeypatch.setenv("FINETOWER_TRAINER_WORKERS", "3")
    paths = compile_pipeline(
        remote_config(distribution="multi_worker"), str(tmp_path), image=IMAGE, target="vertex"
    )
    assert set(paths) == {"json"}  # no open-source KFP YAML
    spec = json.loads(paths["json"].read_text())["pipelineSpec"]
    label = spec["components"]["Trainer"]["executorLabel"]
    args = spec["deploymentSpec"]["executors"][label]["container"]["args"]
    assert "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor" in args
    parameters = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    custom = json.loads(parameters["custom_config"]["runtimeValue"]["constant"])
    assert custom["distribution"] == "multi_worker"
    assert custom["ai_platform_enable_vertex"] is True
    assert custom["ai_platform_vertex_region"] == "europe-west4"
    pools = custom["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 2]
    assert {p["container_spec"]["image_uri"] for p in pools} == {IMAGE}
    assert set(executor_kinds(spec)) == {"container", "resolver"}
