"""What a run did, from ML Metadata: eval AUC, blessed or not, the pushed version, paths,
the number of item embeddings; and the bad-input error behind a failed run."""

from __future__ import annotations

import os
import re

from components.common.errors import DataError
from pipeline.configs import PipelineConfig

_BEAM_SUFFIX = re.compile(r"\s*\[while running '[^']*'\]")


def data_error_in(error: BaseException) -> str | None:
    """The DataError message inside `error` (however Beam or TFX wrapped it), else None."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DataError):
            return _BEAM_SUFFIX.sub("", str(e))
        stack += [e.__cause__, e.__context__]
    # the multi-processing runner re-raises a RuntimeError carrying the worker's traceback
    match = re.search(r"DataError: (.+?)(?:\s*\[while running|\n|$)", str(error))
    return match.group(1) if match else None


def open_store(metadata_path: str):
    """The SQLite ML Metadata store, read-only; None when there is none yet."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.exists(metadata_path):
        return None
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(connection)


def latest_run_artifacts(metadata_path: str, since: float = 0.0) -> dict[str, list]:
    """Artifact type name -> artifacts of the newest pipeline run in the SQLite store (none
    when that run started before `since`, seconds since the epoch)."""
    store = open_store(metadata_path)
    if store is None:
        return {}
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return {}
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    if run.create_time_since_epoch < since * 1000:
        return {}
    types = {t.id: t.name for t in store.get_artifact_types()}
    found: dict[str, list] = {}
    for artifact in store.get_artifacts_by_context(run.id):
        found.setdefault(types[artifact.type_id], []).append(artifact)
    return found


def artifact_property(artifact, name: str):
    """A custom property's value of an MLMD artifact proto (None when unset)."""
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def eval_metrics(evaluation_uri: str, model_name: str | None = None) -> dict[str, float]:
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    for slice_key, metrics in result.slicing_metrics:
        if slice_key == ():
            values = metrics[""][""]
            return {k: v.get("doubleValue", float("nan")) for k, v in values.items()}
    return {}


def baseline_auc(evaluation_uri: str) -> float | None:
    """The Evaluator's baseline (the served model) AUC, when the evaluation had one."""
    try:
        return eval_metrics(evaluation_uri, model_name="baseline").get("auc")
    except Exception:  # noqa: BLE001 (no baseline: TFMA names no such model)
        return None


def summarize(config: PipelineConfig, started: float) -> str:
    import time

    artifacts = latest_run_artifacts(config.metadata_path, since=started)
    if not artifacts:  # `tfx pipeline create` runs this file with run() made a no-op
        return f"finetower: pipeline {config.pipeline_name!r} built (not run)"
    lines = [f"finetower: run finished in {time.time() - started:.0f} s"]
    evaluations = artifacts.get("ModelEvaluation", [])
    if evaluations:
        metrics = eval_metrics(evaluations[-1].uri)
        auc = metrics.get("auc")
        loss = metrics.get("binary_crossentropy")
        accuracy = metrics.get("binary_accuracy")
        if auc is not None:
            lines.append(f"  eval AUC {auc:.4f}, accuracy {accuracy:.4f}, loss {loss:.4f}")
        served = baseline_auc(evaluations[-1].uri)
        if served is not None:
            lines.append(f"  served model's AUC on the same eval split {served:.4f}")
    blessings = artifacts.get("ModelBlessing", [])
    if blessings:
        lines.append(f"  blessed: {'yes' if artifact_property(blessings[-1], 'blessed') else 'no'}")
    pushed = artifacts.get("PushedModel", [])
    if pushed and artifact_property(pushed[-1], "pushed"):
        version = artifact_property(pushed[-1], "pushed_version")
        lines.append(f"  pushed version {version} of user_tower and item_tower")
        lines.append(f"  serving: {config.serving_dir} (models.config inside)")
    elif pushed:
        lines.append("  nothing pushed (not blessed)")
    embeddings = artifacts.get("finetower.ItemEmbeddings", [])
    if embeddings and artifact_property(embeddings[-1], "count"):
        lines.append(
            f"  item embeddings: {artifact_property(embeddings[-1], 'count')} in "
            f"{artifact_property(embeddings[-1], 'published_dir')}"
        )
    published = artifacts.get("finetower.PublishedEmbeddings", [])
    if published and artifact_property(published[-1], "count"):
        last = published[-1]
        backend, folder = artifact_property(last, "ann_backend"), artifact_property(last, "ann_dir")
        lines.append(
            f"  ANN index ({backend}): {folder}, "
            f"recall@100 vs exact {artifact_property(last, 'ann_recall_at_100'):.3f}"
        )
        if artifact_property(last, "redis_published"):
            lines.append(f"  Redis: current version {artifact_property(last, 'redis_version')}")
    lines.append(f"  pipeline root: {config.pipeline_root}; metadata: {config.metadata_path}")
    return "\n".join(lines)


def _run_started_ms(config: PipelineConfig) -> int:
    store = open_store(config.metadata_path)
    runs = store.get_contexts_by_type("pipeline_run") if store is not None else []
    return max((c.create_time_since_epoch for c in runs), default=0)


def push_state_after_failure(config: PipelineConfig) -> str:
    """What a failed run left served: nothing new, or a push whose later steps failed."""
    pushed = latest_run_artifacts(config.metadata_path).get("PushedModel", [])
    # the run's context also holds the served model's PushedModel its resolver read (created by
    # an earlier run): only one this run's Pusher wrote counts
    pushed = [a for a in pushed if a.create_time_since_epoch >= _run_started_ms(config)]
    if pushed and artifact_property(pushed[-1], "pushed"):
        version = artifact_property(pushed[-1], "pushed_version")
        return (
            f"this run pushed version {version} of both towers, but a later step failed; "
            "re-run to finish it (the push is not repeated)"
        )
    return "nothing was pushed; what an earlier run pushed stays served"
