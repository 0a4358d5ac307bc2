"""What the compiled steps ask of the cluster: CPU/memory per component, and the Trainer's
worker pools on Vertex.

Requests: `DEFAULT_RESOURCES` below, overridden by `FINETOWER_RESOURCES`, a JSON object
{component id: {"cpu": "8", "memory": "32G"}}. Each container step of both compiled specs gets
them as requests and limits (Vertex picks a machine by the limits; Kubernetes schedules by the
requests).

Multi-worker (`--distribution multi_worker`): MultiWorkerMirroredStrategy reads its cluster from
`TF_CONFIG`, which a backend must give each worker. Vertex does, for a CustomJob's worker pools:
TFX's Vertex training extension (`tfx.extensions.google_cloud_ai_platform.Trainer`) runs the
Trainer step as a container that submits such a job, chief plus `FINETOWER_TRAINER_WORKERS - 1`
workers on our image. Open-source KFP and the local runner run a Trainer as one pod/process, so
kubeflow.runner compiles multi-worker for Vertex only and refuses it otherwise.
"""

from __future__ import annotations

import json
import os

# cores and memory (Kubernetes quantities) per component id; the rest get OTHER
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "RecipeCsvExampleGen": {"cpu": "2", "memory": "4G"},
    "StatisticsGen": {"cpu": "2", "memory": "4G"},
    "Transform": {"cpu": "2", "memory": "8G"},
    "Trainer": {"cpu": "4", "memory": "16G"},
    "Evaluator": {"cpu": "2", "memory": "8G"},
    "ItemEmbeddings": {"cpu": "2", "memory": "8G"},
    "EmbeddingsPublisher": {"cpu": "2", "memory": "8G"},
}
OTHER = {"cpu": "1", "memory": "2G"}
_UNITS = {"": 1e-9, "K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3, "Ki": 2**10 / 1e9}
_UNITS |= {"Mi": 2**20 / 1e9, "Gi": 2**30 / 1e9, "Ti": 2**40 / 1e9}


def resources_from_environment(environ=os.environ) -> dict[str, dict[str, str]]:
    """DEFAULT_RESOURCES with FINETOWER_RESOURCES (JSON) merged over it, per component."""
    merged = {name: dict(values) for name, values in DEFAULT_RESOURCES.items()}
    raw = environ.get("FINETOWER_RESOURCES", "")
    if raw:
        try:
            given = json.loads(raw)
        except ValueError as error:
            raise SystemExit(f"FINETOWER_RESOURCES is not JSON: {error}") from None
        for name, values in given.items():
            unknown = set(values) - {"cpu", "memory"}
            if unknown:
                raise SystemExit(f"FINETOWER_RESOURCES[{name!r}]: unknown keys {sorted(unknown)}")
            merged.setdefault(name, dict(OTHER)).update(values)
    return merged


def memory_gb(quantity: str) -> float:
    """A Kubernetes memory quantity ("16G", "512Mi") in GB, as the IR's double fields want."""
    number = quantity.rstrip("KMGTi")
    unit = quantity[len(number) :]
    if unit not in _UNITS:
        raise ValueError(f"memory {quantity!r}: use a Kubernetes quantity such as 16G or 512Mi")
    return float(number) * _UNITS[unit]


def apply_resources(spec: dict, resources: dict[str, dict[str, str]]) -> dict:
    """`spec` (a pipelineSpec dict) with each container step's requests and limits set."""
    executors = spec["deploymentSpec"]["executors"]
    for name, component in spec["components"].items():
        container = executors.get(component.get("executorLabel"), {}).get("container")
        if container is None:
            continue
        wanted = resources.get(name.removeprefix("comp-"), OTHER)
        cpu, memory = wanted["cpu"], wanted["memory"]
        container["resources"] = {
            "cpuRequest": float(cpu),
            "cpuLimit": float(cpu),
            "memoryRequest": memory_gb(memory),
            "memoryLimit": memory_gb(memory),
            "resourceCpuRequest": cpu,
            "resourceCpuLimit": cpu,
            "resourceMemoryRequest": memory,
            "resourceMemoryLimit": memory,
        }
    return spec


def vertex_training_args(image: str, environ=os.environ) -> dict:
    """custom_config entries that make TFX's Vertex training extension run the Trainer as a
    CustomJob with a chief and workers (FINETOWER_VERTEX_PROJECT, FINETOWER_VERTEX_REGION,
    FINETOWER_TRAINER_WORKERS (default 2), FINETOWER_TRAINER_MACHINE_TYPE)."""
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor

    project = environ.get("FINETOWER_VERTEX_PROJECT")
    region = environ.get("FINETOWER_VERTEX_REGION")
    if not project or not region:
        raise SystemExit(
            "kubeflow.runner: --distribution multi_worker runs the Trainer as a Vertex "
            "CustomJob: set FINETOWER_VERTEX_PROJECT and FINETOWER_VERTEX_REGION"
        )
    workers = int(environ.get("FINETOWER_TRAINER_WORKERS") or 2)
    if workers < 2:
        raise SystemExit("FINETOWER_TRAINER_WORKERS: multi-worker needs at least 2")
    machine = {"machine_type": environ.get("FINETOWER_TRAINER_MACHINE_TYPE") or "n1-standard-8"}
    pool = {"machine_spec": machine, "container_spec": {"image_uri": image}}
    return {
        constants.ENABLE_VERTEX_KEY: True,
        constants.VERTEX_REGION_KEY: region,
        executor.TRAINING_ARGS_KEY: {
            "project": project,
            "job_spec": {
                "worker_pool_specs": [
                    {**pool, "replica_count": 1},  # the chief
                    {**pool, "replica_count": workers - 1},
                ]
            },
        },
    }


def vertex_multi_worker_trainer(image: str, environ=os.environ):
    """A `trainer_factory` for create_pipeline: the Vertex extension's Trainer, same node id."""
    from tfx.extensions.google_cloud_ai_platform.trainer.component import Trainer

    extra = vertex_training_args(image, environ)

    def factory(trainer_args: dict):
        args = {**trainer_args, "custom_config": {**trainer_args["custom_config"], **extra}}
        return Trainer(**args).with_id("Trainer")

    return factory
