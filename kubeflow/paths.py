"""Paths of a pipeline compiled for a cluster: checked at compile time, decided at run time.

A step runs in a pod whose disk vanishes with it, so every path the job reads or writes must be
on an object store (`gs://`, `s3://`, ...) that every pod reaches; `check_cluster_paths` refuses
anything else, saying which flag to pass. The serving and output dirs become pipeline
parameters (`SERVING_DIR`, `OUTPUT_DIR`), their compiled values only defaults, so one compiled
job serves several environments: set them per run in the Kubeflow UI or with kubeflow.submit,
together with the pipeline root.
"""

from __future__ import annotations

from pipeline.configs import PipelineConfig

SERVING_DIR = "serving_dir"
OUTPUT_DIR = "output_dir"
RUNTIME_DIRS = (SERVING_DIR, OUTPUT_DIR)

# (config field, what it is, the flag or variable that sets it)
_CHECKED = (
    ("train_data", "train data", "--train_data (or FINETOWER_TRAIN_DATA)"),
    ("val_data", "eval data", "--val_data (or FINETOWER_VAL_DATA)"),
    ("items", "item catalogue", "--items (or FINETOWER_ITEMS)"),
    ("base_model", "base model", "--base_model (or FINETOWER_BASE_MODEL)"),
    (
        "output_dir",
        "pipeline root, serving and output dirs",
        "--pipeline_root gs://BUCKET/PATH (or FINETOWER_OUTPUT_DIR)",
    ),
)


def is_object_store(path: str) -> bool:
    """True for a URI every pod can reach (gs://, s3://, hdfs://, ...); file:// is local."""
    return "://" in path and not path.startswith("file://")


def local_paths(config: PipelineConfig) -> list[str]:
    """One line per configured path that is on this machine's disk, naming the flag to pass."""
    found = []
    for name, what, flag in _CHECKED:
        value = getattr(config, name)
        if value and not is_object_store(value):
            found.append(f"{what} {value!r} is a local path: pass {flag} on an object store")
    return found


def check_cluster_paths(config: PipelineConfig) -> None:
    """SystemExit naming every local path: a pod's own disk vanishes with the pod."""
    if not config.train_data:
        raise SystemExit(
            "kubeflow.runner: set --train_data (or FINETOWER_TRAIN_DATA): the "
            "embedded demo data lives on this machine, not in the cluster"
        )
    found = local_paths(config)
    if found:
        raise SystemExit(
            "kubeflow.runner: a cluster's steps cannot read this machine's disk:\n  "
            + "\n  ".join(found)
        )


def use_runtime_dirs(pipeline, config: PipelineConfig) -> dict[str, str]:
    """Turn the components' `serving_dir` and `output_dir` execution parameters into pipeline
    parameters of the same names (compiled values as defaults); returns {name: default}."""
    from tfx.orchestration import data_types

    made: dict[str, data_types.RuntimeParameter] = {}
    for component in pipeline.components:
        properties = getattr(component, "exec_properties", None) or {}
        for name in RUNTIME_DIRS:
            value = properties.get(name)
            if not isinstance(value, str):
                continue
            parameter = made.setdefault(
                name, data_types.RuntimeParameter(name=name, ptype=str, default=value)
            )
            if parameter.default != value:
                raise ValueError(
                    f"{component.id}.{name} is {value!r}, another component's is "
                    f"{parameter.default!r}: one pipeline parameter cannot hold both"
                )
            properties[name] = parameter
    return {name: parameter.default for name, parameter in made.items()}
