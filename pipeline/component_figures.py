"""A component's key figure from ML Metadata: the rows of each split, the Trainer's val AUC,
the Evaluator's AUC and blessing, the pushed version, the embeddings count, the index recall.

`latest_execution` reads one node's newest execution and its output artifacts; `key_figure`
turns those artifacts into a few words, by artifact type. Only small files are read (split
statistics, finetower_model.json, the evaluation's metrics)."""

from __future__ import annotations

import json
import os

from pipeline.run_summary import artifact_property, eval_metrics, open_store


def latest_execution(metadata_path: str, pipeline_name: str, node_id: str):
    """(execution, {artifact type name: [output artifacts]}) of the node's newest execution;
    (None, {}) when it has none."""
    from ml_metadata.proto import metadata_store_pb2

    store = open_store(metadata_path)
    if store is None:
        return None, {}
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return None, {}
    executions = store.get_executions_by_context(context.id)
    if not executions:
        return None, {}
    execution = max(executions, key=lambda e: e.id)
    output_kinds = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    ids = [
        event.artifact_id
        for event in store.get_events_by_execution_ids([execution.id])
        if event.type in output_kinds
    ]
    types = {t.id: t.name for t in store.get_artifact_types()}
    outputs: dict[str, list] = {}
    for artifact in store.get_artifacts_by_id(ids):
        outputs.setdefault(types[artifact.type_id], []).append(artifact)
    return execution, outputs


def state_name(execution) -> str:
    """`ran` for a completed execution, `cached` for a cache hit, else the MLMD state."""
    from ml_metadata.proto import metadata_store_pb2

    state = execution.last_known_state
    if state == metadata_store_pb2.Execution.COMPLETE:
        return "ran"
    if state == metadata_store_pb2.Execution.CACHED:
        return "cached"
    return metadata_store_pb2.Execution.State.Name(state).lower()


def split_rows(statistics_uri: str, splits: list[str]) -> dict[str, int]:
    """Split name -> number of examples, from StatisticsGen's `Split-<name>/FeatureStats.pb`."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rows = {}
    for name in splits:
        path = os.path.join(statistics_uri, f"Split-{name}", "FeatureStats.pb")
        if not tf.io.gfile.exists(path):
            continue
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        stats.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        rows[name] = sum(d.num_examples for d in stats.datasets)
    return rows


def _split_names(artifact) -> list[str]:
    return json.loads(artifact.properties["split_names"].string_value or "[]")


def _splits(artifact) -> str:
    return "splits " + ", ".join(_split_names(artifact))


def sample_rates(artifact) -> dict[str, float]:
    """StatisticsGen's `sample_rate_by_split` (a JSON value: a Struct holding the JSON text
    under "__value__"); {} when it was not recorded."""
    value = artifact_property(artifact, "sample_rate_by_split")
    if value is None:
        return {}
    text = value.fields["__value__"].string_value if hasattr(value, "fields") else value
    return json.loads(text or "{}")


def _rows(artifact) -> str:
    """Rows per split; statistics of a sample count its rows, so those are scaled back up."""
    rows = split_rows(artifact.uri, _split_names(artifact))
    rates = sample_rates(artifact)
    figures = []
    for name, count in rows.items():
        rate = rates.get(name) or 1.0
        figures.append(
            f"{name} {count:,} rows"
            if rate >= 1.0
            else f"{name} ~{round(count / rate):,} rows ({count:,} sampled)"
        )
    return ", ".join(figures)


def _trainer(artifact) -> str:
    import tensorflow as tf

    from components.trainer.training import MODEL_INFO

    path = os.path.join(artifact.uri, MODEL_INFO)
    if not tf.io.gfile.exists(path):  # an imported base model, or a model of another trainer
        return ""
    info = json.loads(tf.io.gfile.GFile(path).read())
    val_auc = info.get("history", {}).get("val_auc") or [float("nan")]
    return f"val AUC {val_auc[-1]:.4f} ({info.get('train_input', '?')}, {len(val_auc)} epochs)"


def _evaluation(artifact) -> str:
    auc = eval_metrics(artifact.uri).get("auc")
    return "" if auc is None else f"AUC {auc:.4f}"


def _blessing(artifact) -> str:
    return "blessed" if artifact_property(artifact, "blessed") else "NOT blessed"


def _pushed(artifact) -> str:
    if not artifact_property(artifact, "pushed"):
        return "nothing pushed"
    return f"version {artifact_property(artifact, 'pushed_version')}"


def _embeddings(artifact) -> str:
    return f"{artifact_property(artifact, 'count') or 0:,} item embeddings"


def _published(artifact) -> str:
    count = artifact_property(artifact, "count")
    if not count:
        return "nothing published"
    backend = artifact_property(artifact, "ann_backend")
    recall = artifact_property(artifact, "ann_recall_at_100") or 0.0
    return f"{backend} index of {count:,}, recall@100 {recall:.3f}"


# artifact type -> figure; a component's figure joins those of its outputs, in this order
FIGURES = {
    "Examples": _splits,
    "ExampleStatistics": _rows,
    "Model": _trainer,
    "ModelEvaluation": _evaluation,
    "ModelBlessing": _blessing,
    "PushedModel": _pushed,
    "finetower.ItemEmbeddings": _embeddings,
    "finetower.PublishedEmbeddings": _published,
}


def key_figure(outputs: dict[str, list]) -> str:
    """A few words on what a component produced, from its output artifacts by type."""
    parts = [FIGURES[kind](outputs[kind][-1]) for kind in FIGURES if outputs.get(kind)]
    return ", ".join(p for p in parts if p)
