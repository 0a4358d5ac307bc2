"""Compile the same `create_pipeline` with KubeflowV2DagRunner.

    python -m kubeflow.runner --output_dir DIR [--image IMAGE] [--pipeline_root gs://...] \
        [--train_data gs://... --val_data gs://... --items gs://...] [--beam_profile dataflow]

writes `DIR/<pipeline name>.json` (a Vertex PipelineJob) and `DIR/<pipeline name>.yaml` (the
KFP IR, to upload in the Kubeflow UI or with kubeflow.submit; its steps start through
kubeflow.entrypoint, which restores artifact types open-source KFP drops). Data paths, pipeline
root, Beam arguments and the image come from flags or FINETOWER_* environment variables
(pipeline/configs.py, pipeline/beam_profiles.py, kubeflow/image.py); component code is
referenced by dotted path inside the image, so nothing is uploaded at compile time.

`tfx pipeline create --engine vertex --pipeline_path kubeflow/runner.py` compiles through the
same `compile_pipeline` (the CLI names the file pipeline.json in its own folder; the YAML is
written beside it). TFX 1.21's `--engine kubeflow` fails on import: its handler imports the KFP
v1 runner (`tfx.orchestration.kubeflow.kubeflow_dag_runner`), which 1.21 no longer ships.
"""

from __future__ import annotations

import os
import sys

# TFMA recognises Keras 2 models only so; set where the process starts, before TensorFlow loads
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from kubeflow import entrypoint, resources  # noqa: E402
from kubeflow import image as image_config  # noqa: E402
from kubeflow import paths as cluster_paths  # noqa: E402
from pipeline import beam_profiles, configs  # noqa: E402
from pipeline.dag import create_pipeline  # noqa: E402

REPO_ROOT = str(Path(__file__).resolve().parents[1])
DEFAULT_IMAGE = image_config.default_image()


def relocate_code_paths(value, local_root: str = REPO_ROOT, image_root: str = "/pipeline"):
    """`value` (the compiled job) with every string naming a file of this checkout rewritten to
    the same file inside the image (e.g. ImportSchemaGen's schema/schema.pbtxt)."""
    if isinstance(value, dict):
        return {k: relocate_code_paths(v, local_root, image_root) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate_code_paths(v, local_root, image_root) for v in value]
    if isinstance(value, str) and local_root + "/" in value:
        return value.replace(local_root + "/", image_root.rstrip("/") + "/")
    return value


def artifact_titles(spec: dict) -> set[str]:
    """Every artifact schema title in a pipelineSpec."""
    titles = set()
    for component in spec.get("components", {}).values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                kind = artifact["artifactType"]
                if "schemaTitle" in kind:
                    titles.add(kind["schemaTitle"])
                else:
                    titles.add(yaml.safe_load(kind["instanceSchema"]).get("title", "tfx.Artifact"))
    return titles


def unresolvable_titles(spec: dict) -> list[str]:
    """Titles the container entrypoint could not turn back into an artifact class: neither a
    TFX type nor one of ours that the image's `finetower` module exports."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils

    from kubeflow.artifact_types import PREFIX, custom_artifact_types

    ours = custom_artifact_types()
    missing = []
    for title in sorted(artifact_titles(spec)):
        if title in compiler_utils.TITLE_TO_CLASS_PATH:
            continue
        if title.startswith(PREFIX) and title[len(PREFIX) :] in ours:
            continue
        missing.append(title)
    return missing


SIDES = (("inputs", "inputDefinitions"), ("outputs", "outputDefinitions"))


def for_open_source_kfp(spec: dict) -> dict:
    """A copy of `spec` whose container steps start through kubeflow.entrypoint, each told the
    compiled types of its inputs and outputs (which the open-source KFP backend may drop)."""
    spec = json.loads(json.dumps(spec))
    executors = spec["deploymentSpec"]["executors"]
    for component in spec["components"].values():
        container = executors.get(component.get("executorLabel"), {}).get("container")
        if container is None or container["command"][-1] != entrypoint.TFX_ENTRYPOINT:
            continue
        types = {
            side: {
                key: artifact["artifactType"]["instanceSchema"]
                for key, artifact in component.get(definitions, {}).get("artifacts", {}).items()
            }
            for side, definitions in (
                ("inputs", "inputDefinitions"),
                ("outputs", "outputDefinitions"),
            )
        }
        container["command"] = [*container["command"][:-1], "kubeflow.entrypoint"]
        container["args"] = [
            entrypoint.ARTIFACT_TYPES_FLAG,
            json.dumps(types, sort_keys=True),
            *container["args"],
        ]
    return spec


def _pipeline_for(config, baseline_from: str, trainer_factory=None):
    """(the DAG for a cluster, its pipeline parameters' defaults)."""
    pipeline = create_pipeline(
        config,
        config.train_data,
        config.val_data,
        config.items,
        local_metadata=False,
        baseline_from=baseline_from,
        trainer_factory=trainer_factory,
    )
    return pipeline, cluster_paths.use_runtime_dirs(pipeline, config)


def _compile_without_runner(pipeline, image: str) -> dict:
    """The PipelineJob dict KubeflowV2DagRunner.run(write_out=False) returns, built with its
    own PipelineBuilder: the tfx CLI allows one run() per pipeline file, and the KFP build is
    the second compile."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx import version
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner, pipeline_builder

    runner_config = kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
        default_image=image, use_pipeline_spec_2_1=True
    )
    spec = pipeline_builder.PipelineBuilder(
        tfx_pipeline=pipeline,
        default_image=image,
        default_commands=runner_config.default_commands,
        use_pipeline_spec_2_1=True,
    ).build()
    spec.sdk_version = f"tfx-{version.__version__}"
    spec.schema_version = "2.1.0"
    runtime_config = pipeline_builder.RuntimeConfigBuilder(
        pipeline_info=pipeline.pipeline_info, parameter_values=None, use_pipeline_spec_2_1=True
    ).build()
    job = pipeline_spec_pb2.PipelineJob(
        display_name=pipeline.pipeline_info.pipeline_name, runtime_config=runtime_config
    )
    job.pipeline_spec.update(json_format.MessageToDict(spec))
    return json_format.MessageToDict(job)


def _finish(job: dict, code_dir: str, pipeline_root: str, parameters: dict[str, str]) -> dict:
    """The job with code paths inside the image, the pipeline root as the spec's default
    (without it a UI upload falls back to the cluster's, often minio://, which tf.io.gfile
    cannot write) and the serving/output dir parameters' defaults (in the spec for a UI
    upload, in the runtime config for Vertex)."""
    job = relocate_code_paths(job, REPO_ROOT, code_dir)
    missing = unresolvable_titles(job["pipelineSpec"])
    if missing:
        raise SystemExit(
            f"kubeflow.runner: artifact types {missing} cannot be resolved inside the image "
            "(custom types must be named finetower.<Class> in components/*/component.py)"
        )
    spec = resources.apply_resources(job["pipelineSpec"], resources.resources_from_environment())
    spec["defaultPipelineRoot"] = pipeline_root
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, default in parameters.items():
        declared[name].update(defaultValue=default, isOptional=True)
        job.setdefault("runtimeConfig", {}).setdefault("parameterValues", {})[name] = default
    return job


MULTI_WORKER_REFUSED = (
    "kubeflow.runner: --distribution multi_worker needs a Trainer with worker pools and "
    "TF_CONFIG, which only Vertex provides (TFX's Vertex training extension runs it as a "
    "CustomJob); open-source KFP runs a Trainer as one pod. Compile with --target vertex, or "
    "use --distribution mirrored (all cores of one pod)"
)


# steps that read the serving dir (components/latest_blessed), which is not among their inputs
READS_SERVING_DIR = ("served_model", "latest_blessed_model")


def no_cache_for_baseline(spec: dict) -> dict:
    """The warm-start and latest-blessed-model steps read the serving dir, which is not among
    their inputs: a cached answer would be stale, so KFP must always run them."""
    for task_id in READS_SERVING_DIR:
        task = spec["root"]["dag"]["tasks"].get(task_id)
        if task is not None:
            task["cachingOptions"] = {"enableCache": False}
    return spec


WINDOW_REFUSED = (
    "--window_spans {n}: a rolling window of spans is resolved by TFX's rolling_range resolver "
    "function over past runs in ML Metadata, which KubeflowV2DagRunner does not compile "
    "(Vertex: 'Only single Channel is supported') and open-source KFP does not run (it runs "
    "no resolver executors). Use --window_spans 1 on the cluster: each run trains on the "
    "newest span and, with --warm_start served (the default), starts from the model served "
    "now, so yesterday's model carries the earlier spans forward. For a window over ML "
    "Metadata, run pipeline.local_runner"
)


def compile_pipeline(
    config: configs.PipelineConfig,
    output_dir: str,
    image: str,
    code_dir: str = image_config.CODE_DIR,
    kfp_entrypoint_fix: bool = True,
    target: str = "both",
) -> dict[str, Path]:
    """Write the PipelineJob JSON (Vertex: TFX's spec as compiled, its Resolver included, which
    also gives the Trainer its warm start) and the KFP IR YAML (open-source KFP: the baseline and
    the warm start from components/latest_blessed's steps instead of a Resolver; steps start
    through kubeflow.entrypoint unless `kfp_entrypoint_fix` is False);
    return their paths. `target` "vertex" writes the JSON only. Refuses local paths
    (kubeflow/paths.py), and multi-worker training but for Vertex (kubeflow/resources.py)."""
    from tfx import v1 as tfx

    cluster_paths.check_cluster_paths(config)
    if config.window_spans > 1:  # rolling_range: a resolver function over past runs' outputs
        raise SystemExit(WINDOW_REFUSED.format(n=config.window_spans))
    trainer_factory = None
    if config.distribution == "multi_worker":
        if target != "vertex":
            raise SystemExit(MULTI_WORKER_REFUSED)
        trainer_factory = resources.vertex_multi_worker_trainer(image)
    os.makedirs(output_dir, exist_ok=True)
    # Vertex: TFX's LatestBlessedModelStrategy gives the Evaluator's baseline and the warm start
    pipeline, parameters = _pipeline_for(config, "vertex", trainer_factory)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image,
            # IR 2.1: parameterValues and the inputs spec, which open-source KFP v2 needs
            use_pipeline_spec_2_1=True,
        ),
        output_dir=output_dir,
        output_filename=f"{config.pipeline_name}.json",
    )
    runner.run(pipeline)  # may be called once per runner
    # `tfx pipeline create` points the runner at its own folder and `pipeline.json`
    job_path = Path(runner._output_dir) / runner._output_filename  # noqa: SLF001
    if not job_path.exists():
        return {}
    job = _finish(json.loads(job_path.read_text()), code_dir, config.pipeline_root, parameters)
    job_path.write_text(json.dumps(job, indent=2, sort_keys=True))
    if target == "vertex":
        return {"json": job_path}

    pipeline, parameters = _pipeline_for(config, "push_records")
    kfp_job = _compile_without_runner(pipeline, image)
    spec = _finish(kfp_job, code_dir, config.pipeline_root, parameters)["pipelineSpec"]
    spec = no_cache_for_baseline(for_open_source_kfp(spec) if kfp_entrypoint_fix else spec)
    yaml_path = job_path.with_suffix(".yaml")
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return {"json": job_path, "yaml": yaml_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=os.environ.get("FINETOWER_KFP_OUTPUT_DIR", "kfp"))
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--pipeline_root", help="where the run writes: <root>/tfx, /serving, ..")
    parser.add_argument("--train_data")
    parser.add_argument("--val_data")
    parser.add_argument("--items")
    parser.add_argument("--pipeline_output_dir", dest="output_dir_in_cluster")
    parser.add_argument("--beam_profile", choices=beam_profiles.PROFILES)
    parser.add_argument("--distribution", choices=["one_device", "mirrored", "multi_worker"])
    parser.add_argument("--span", type=int, help="ingest this span ({SPAN} patterns)")
    parser.add_argument("--window_spans", type=int, help="Transform/Trainer see this many spans")
    parser.add_argument(
        "--warm_start",
        choices=["served", "none"],
        help="served (default): the Trainer starts from the served model when there is one",
    )
    parser.add_argument("--base_model", help="a Model folder on an object store to fine-tune")
    parser.add_argument(
        "--target",
        choices=["both", "vertex"],
        default="both",
        help="both: Vertex JSON and open-source KFP YAML; vertex: the JSON only",
    )
    parser.add_argument("--code_dir", default=image_config.CODE_DIR, help="code in the image")
    parser.add_argument(
        "--stock_kfp_entrypoint",
        action="store_true",
        help="KFP YAML: TFX's entrypoint as compiled (no restoring of dropped artifact types)",
    )
    args = parser.parse_args(argv)
    config = configs.from_environment(
        train_data=args.train_data,
        val_data=args.val_data,
        items=args.items,
        output_dir=args.output_dir_in_cluster,
        distribution=args.distribution,
        span=args.span,
        window_spans=args.window_spans,
        warm_start=args.warm_start,
        base_model=args.base_model,
    )
    if args.pipeline_root:
        config.output_dir = args.pipeline_root
    profile = args.beam_profile or os.environ.get("FINETOWER_BEAM_PROFILE")
    beam_args = beam_profiles.beam_args_from_environment(profile=profile, image=args.image)
    if beam_args is not None:
        config.beam_pipeline_args = beam_args
    paths = compile_pipeline(
        config,
        args.output_dir,
        args.image,
        args.code_dir,
        not args.stock_kfp_entrypoint,
        target=args.target,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
