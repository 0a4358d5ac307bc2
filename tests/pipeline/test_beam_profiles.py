"""Beam profiles: the flags each runner needs, and the real pipeline under multi-processing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.testing import util as beam_testing
from tfx.dsl.components.base import base_beam_executor

from pipeline import configs
from pipeline.beam_profiles import beam_args, beam_args_from_environment
from tests.pipeline_helpers import run_local_runner, small_recipe_files

IMAGE = "registry.example/finetower:1"


def test_in_memory_is_the_configurations_default():
    assert beam_args() == configs.BEAM_IN_MEMORY
    assert beam_args("in_memory") == configs.PipelineConfig().beam_pipeline_args


def test_multi_processing_names_the_direct_runner_and_one_worker_per_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert beam_args("multi_processing")[:3] == [
        "--runner=DirectRunner",  # named: Beam's default would try to download Prism
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=6",
    ]
    assert beam_args("multi_processing")[3] == configs.DIRECT_RUNNER_CODE
    assert "--direct_num_workers=3" in beam_args("multi_processing", workers=3)


def test_dataflow_runs_our_image_and_passes_other_flags_through():
    args = beam_args(
        "dataflow",
        project="p",
        region="europe-west4",
        temp_location="gs://b/tmp",
        image=IMAGE,
        max_num_workers=20,
    )
    assert args[0] == "--runner=DataflowRunner"
    for flag in (
        "--project=p",
        "--region=europe-west4",
        "--temp_location=gs://b/tmp",
        "--staging_location=gs://b/tmp",
        f"--sdk_container_image={IMAGE}",
        "--sdk_location=container",
        "--experiments=use_runner_v2",
        "--max_num_workers=20",
    ):
        assert flag in args
    with pytest.raises(ValueError, match="needs region, temp_location, image"):
        beam_args("dataflow", project="p")


def test_flink_and_spark_run_our_image_in_docker_environments():
    flink = beam_args("flink", flink_master="flink:8081", image=IMAGE, parallelism=8)
    assert flink[:4] == [
        "--runner=FlinkRunner",
        "--flink_master=flink:8081",
        "--environment_type=DOCKER",
        f"--environment_config={IMAGE}",
    ]
    assert "--parallelism=8" in flink
    spark = beam_args("spark", spark_master_url="spark://m:7077", image=IMAGE, job_server_jar="j")
    assert spark[:2] == ["--runner=SparkRunner", "--spark_master_url=spark://m:7077"]
    assert "--spark_job_server_jar=j" in spark
    with pytest.raises(ValueError, match="needs spark_master_url"):
        beam_args("spark", image=IMAGE)


def test_unknown_profile_or_option_is_an_error():
    with pytest.raises(ValueError, match="unknown Beam profile 'prism'"):
        beam_args("prism")
    with pytest.raises(ValueError, match="takes no options but image"):
        beam_args("in_memory", workers=2)
    with pytest.raises(ValueError, match="takes only workers"):
        beam_args("multi_processing", project="p")


def test_profile_from_environment():
    assert beam_args_from_environment({}) is None
    env = {"FINETOWER_BEAM_PROFILE": "multi_processing", "FINETOWER_BEAM_WORKERS": "2"}
    assert beam_args_from_environment(env) == beam_args("multi_processing", workers=2)


def test_pipeline_completes_under_multi_processing_and_bad_input_still_reads_cleanly(tmp_path):
    data = small_recipe_files(tmp_path / "data", rows=1500, items=150)
    env = {"FINETOWER_BEAM_PIPELINE_ARGS": " ".join(beam_args("multi_processing", workers=2))}
    out = tmp_path / "out"
    done = run_local_runner(
        "--train_data",
        str(data["train"]),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(out),
        "--epochs",
        "1",
        env=env,
        timeout=840,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (out / "serving" / "user_tower" / "1" / "saved_model.pb").is_file()
    assert (out / "item_embeddings" / "1" / "embeddings.parquet").is_file()

    lines = data["train"].read_text().splitlines(keepends=True)
    fields = lines[9].split(",")
    fields[3] = "oops"
    lines[9] = ",".join(fields)
    bad = tmp_path / "bad" / "train.csv"
    bad.parent.mkdir()
    bad.write_text("".join(lines))
    failed = run_local_runner(
        "--train_data",
        str(bad),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(tmp_path / "bad_out"),
        env=env,
        timeout=600,
    )
    assert failed.returncode == 1
    # the multi-processing runner wraps the worker's error; the runner still prints it clean
    assert f"finetower: run failed: {bad}, line 10, field 4: 'oops' is not a number\n" in (
        failed.stderr
    )


class _BeamExecutor(base_beam_executor.BaseBeamExecutor):
    """The base every Beam-based TFX executor shares: its constructor settles the workers'
    dependencies (tfx.utils.dependency_utils), its _make_beam_pipeline builds the pipeline."""

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX's name)
        raise NotImplementedError


def _ephemeral_packages(tmp: Path) -> list[Path]:
    return [p for p in tmp.rglob("*") if "tfx_ephemeral" in p.name or p.name == "setup.py"]


def _executor_in(tmp: Path, monkeypatch, args: list[str]) -> _BeamExecutor:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where TFX's mkdtemp would build
    context = _BeamExecutor.Context(beam_pipeline_args=args, tmp_dir=str(tmp / "executor"))
    return _BeamExecutor(context)


def test_no_profile_makes_tfx_package_itself_for_the_workers(tmp_path, monkeypatch):
    """The cost the profiles avoid, seen once: args that do not say where the workers' code
    comes from make TFX build and attach its own sdist."""
    bare = [a for a in beam_args("in_memory") if a != configs.DIRECT_RUNNER_CODE]
    executor = _executor_in(tmp_path, monkeypatch, bare)
    assert _ephemeral_packages(tmp_path)
    assert any(a.startswith("--extra_package=") for a in executor._beam_pipeline_args)


@pytest.mark.parametrize(
    "profile, options",
    [
        ("in_memory", {}),
        ("in_memory", {"image": IMAGE}),
        ("multi_processing", {"workers": 2}),
        ("dataflow", {"project": "p", "region": "r", "temp_location": "gs://b/t", "image": IMAGE}),
        ("flink", {"flink_master": "flink:8081", "image": IMAGE}),
        ("spark", {"spark_master_url": "spark://m:7077", "image": IMAGE}),
    ],
)
def test_every_profile_names_the_workers_code_so_tfx_builds_no_package(
    profile, options, tmp_path, monkeypatch
):
    args = beam_args(profile, **options)
    executor = _executor_in(tmp_path, monkeypatch, args)
    assert not _ephemeral_packages(tmp_path)
    assert not any(a.startswith("--extra_package") for a in executor._beam_pipeline_args)
    image = options.get("image", configs.IN_PROCESS_ENVIRONMENT)
    assert f"--sdk_container_image={image}" in args
    # Beam accepts the combination (the portable runners' environment flags included)
    assert not PipelineOptionsValidator(PipelineOptions(args), None).validate()


def test_the_direct_runner_runs_with_the_in_process_flag(tmp_path, monkeypatch):
    executor = _executor_in(tmp_path, monkeypatch, beam_args("in_memory"))
    with executor._make_beam_pipeline() as pipeline:
        counted = pipeline | beam.Create(range(1000)) | beam.combiners.Count.Globally()
        beam_testing.assert_that(counted, beam_testing.equal_to([1000]))
    assert not _ephemeral_packages(tmp_path)
