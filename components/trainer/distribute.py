"""The Trainer's tf.distribute strategy, data sharding and export folder, from configuration.

`TrainerConfig.distribution` (pipeline/configs.py):

- `one_device` (default): TensorFlow's default strategy, i.e. no distribution at all; run_fn
  behaves exactly as it did before this module existed.
- `mirrored`: MirroredStrategy over this machine's devices (GPUs; CPU when there are none).
- `multi_worker`: MultiWorkerMirroredStrategy; the cluster comes from `TF_CONFIG` (Vertex AI
  custom jobs and Kubeflow's TFJob set it), synchronous all-reduce every step.

Batch and learning rate: `batch_size` (the recipe's 128) is the *global* batch. Each step the
N replicas each take batch_size / N rows and the gradients are summed over replicas of a loss
averaged over the global batch, so a step is the same update as one single-device step on 128
rows; the learning rate therefore stays as configured (Adam 1e-3). Scaling out makes epochs
shorter in wall time, not the optimisation different. A batch that does not divide by N is
refused rather than silently changed.

Sharding: ExampleGen writes one TFRecord file per input file and split. With at least as many
files as workers, each worker reads whole files (auto-shard FILE: no worker reads a byte it
throws away); otherwise every worker reads everything and keeps its part of the rows (DATA).

Exports: every worker must take part in saving (variables are read through collectives), but
only the chief's copy is kept; the others save into a temporary folder that is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

ONE_DEVICE, MIRRORED, MULTI_WORKER = "one_device", "mirrored", "multi_worker"
DISTRIBUTIONS = (ONE_DEVICE, MIRRORED, MULTI_WORKER)


def strategy_for(distribution: str | None) -> tf.distribute.Strategy:
    """The strategy named by `distribution` (None: one_device).

    Raises ValueError for an unknown name, or for multi_worker without a usable TF_CONFIG."""
    name = distribution or ONE_DEVICE
    if name == ONE_DEVICE:
        return tf.distribute.get_strategy()
    if name == MIRRORED:
        return tf.distribute.MirroredStrategy()
    if name == MULTI_WORKER:
        cluster = _tf_config_cluster().get("cluster", {})
        if not (cluster.get("worker") or cluster.get("chief")):
            raise ValueError(
                "distribution 'multi_worker' needs TF_CONFIG with a cluster of workers, e.g. "
                '{"cluster": {"worker": ["host0:port", "host1:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()
        )
    raise ValueError(f"distribution {name!r}: expected one of {', '.join(DISTRIBUTIONS)}")


def _tf_config_cluster() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON: {error}") from None


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many machines take part (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker whose exports are kept: the `chief` task, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and task_id in (None, 0) and not has_chief


def check_global_batch(global_batch: int, strategy: tf.distribute.Strategy) -> None:
    """Raises ValueError when the global batch does not divide evenly over the replicas in
    sync (the step would no longer be the recipe's update)."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"batch_size {global_batch} (the global batch) does not divide by the "
            f"{replicas} replicas in sync; choose a multiple of {replicas}"
        )


def per_replica_batch(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """Rows each replica takes per step (after `check_global_batch`)."""
    check_global_batch(global_batch, strategy)
    return global_batch // strategy.num_replicas_in_sync


def shard_policy(num_files: int, workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE when every worker gets at least one whole file, else DATA."""
    if workers > 1 and num_files >= workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def count_files(patterns: list[str]) -> int:
    """Files matched by the split's patterns (ExampleGen's shards)."""
    return sum(len(tf.io.gfile.glob(p)) for p in patterns)


def shard_by_files(dataset, files: list[str], strategy: tf.distribute.Strategy):
    """`dataset` with the auto-shard policy for this many files and workers; unchanged when
    there is a single worker (no option set, so single-worker input stays identical) or when
    it is not a tf.data.Dataset (in-memory arrays: Keras shards those by rows itself)."""
    workers = num_workers(strategy)
    if workers == 1 or not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = shard_policy(count_files(files), workers)
    return dataset.with_options(options)


def worker_dir(path: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker writes what it saves: `path` on the chief; on any other worker a new
    temporary folder (remove it with `discard_worker_dir`)."""
    if is_chief(strategy):
        return path
    return tempfile.mkdtemp(prefix="finetower-worker-")


def discard_worker_dir(path: str, strategy: tf.distribute.Strategy) -> None:
    """Remove a non-chief worker's temporary folder; nothing on the chief."""
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)
