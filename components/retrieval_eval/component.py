"""RetrievalEval component: spec, executor, component.

After the push: the pushed towers (PushedModel), SampleGen's catalogue and held-out events,
and optionally the ItemEmbeddings artifact (then the served embeddings are what is ranked)
give exact full-catalogue Recall/HitRate/NDCG@K and MRR for the towers, popularity and the
pretrained vectors alone, plus an ANN index's recall against exact search
(`components.retrieval_eval.evaluation`). The artifact holds

    metrics.json   protocol, K, each method's metrics, ANN recall, HR@50 ratios
    report.md      the same as tables
    recall.png     HitRate@K and Recall@K per method

A run that pushed nothing evaluates the baselines only, and says so.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import (
    HeldOutInteractions,
    ItemCatalogue,
    ItemEmbeddingsArtifact,
    RetrievalMetrics,
)
from components.common.errors import ArtifactError
from components.common.names import CATALOGUE_TABLE, CATALOGUE_TEXT, EMBEDDINGS_FILE
from components.common.paths import join, local_copy
from components.common.vectors import read_vectors
from components.pusher.pushed import pushed_towers
from components.retrieval_eval import report
from components.retrieval_eval.evaluation import (
    Catalogue,
    build_queries,
    evaluate,
    ratios,
    read_table,
)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOT_FILE = "recall.png"
TOWER_BATCH = 8192


class RetrievalEvalSpec(ComponentSpec):
    PARAMETERS = {
        "ks": ExecutionParameter(type=str),  # comma-separated cut-offs, e.g. "10,20,50,100"
        "ann_backend": ExecutionParameter(type=str, optional=True),
        "title": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "catalogue": ChannelParameter(type=ItemCatalogue),
        "held_out": ChannelParameter(type=HeldOutInteractions),
        "item_embeddings": ChannelParameter(type=ItemEmbeddingsArtifact, optional=True),
    }
    OUTPUTS = {"metrics": ChannelParameter(type=RetrievalMetrics)}


def read_catalogue(uri: str) -> Catalogue:
    """Catalogue vectors (row order of catalogue.txt) and their target train + eval counts."""
    with local_copy(join(uri, CATALOGUE_TEXT)) as local:
        vectors = read_vectors(local)
    table = read_table(join(uri, CATALOGUE_TABLE))
    counts = dict(
        zip(
            table["item"].to_pylist(),
            (table["train_count"].to_numpy() + table["val_count"].to_numpy()).tolist(),
            strict=True,
        )
    )
    return Catalogue(vectors, np.array([counts.get(i, 0) for i in vectors.ids], np.float32))


def user_tower_of(path: str):
    """The pushed user tower as a function: user vectors -> (query [n, 64], bias [n])."""
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def run(user_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        queries, biases = [], []
        for start in range(0, len(user_vectors), TOWER_BATCH):
            out = serve(user_vector=tf.constant(user_vectors[start : start + TOWER_BATCH]))
            queries.append(out["query"].numpy())
            biases.append(out["bias"].numpy().reshape(-1))
        return np.concatenate(queries), np.concatenate(biases)

    return run


def tower_item_embeddings(path: str, item_vectors: np.ndarray) -> np.ndarray:
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return np.concatenate(
        [
            serve(item_vector=tf.constant(item_vectors[s : s + TOWER_BATCH]))[
                "item_embedding"
            ].numpy()
            for s in range(0, len(item_vectors), TOWER_BATCH)
        ]
    )


def served_item_embeddings(uri: str, ids: list[str]) -> np.ndarray:
    """The ItemEmbeddings artifact's embeddings in the catalogue's row order."""
    table = read_table(join(uri, EMBEDDINGS_FILE))
    row_of = {item: row for row, item in enumerate(table["item_id"].to_pylist())}
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise ArtifactError(
            f"{len(missing)} catalogue item(s) have no served embedding (e.g. {missing[:3]}) "
            f"in {uri}"
        )
    embeddings = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return embeddings[[row_of[i] for i in ids]]


def write_outputs(uri: str, result: dict[str, Any], title: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / METRICS_FILE).write_text(json.dumps(result, indent=2, default=float) + "\n")
        (folder / REPORT_FILE).write_text(report.markdown_report(result, title))
        report.plot(result, folder / PLOT_FILE)
        tf.io.gfile.makedirs(uri)
        for name in (METRICS_FILE, REPORT_FILE, PLOT_FILE):
            tf.io.gfile.copy(str(folder / name), join(uri, name), overwrite=True)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        pushed = artifact_utils.get_single_instance(input_dict["pushed_model"])
        catalogue_artifact = artifact_utils.get_single_instance(input_dict["catalogue"])
        held_out = artifact_utils.get_single_instance(input_dict["held_out"])
        out = artifact_utils.get_single_instance(output_dict["metrics"])
        ks = [int(k) for k in exec_properties["ks"].split(",") if k.strip()]

        catalogue = read_catalogue(catalogue_artifact.uri)
        last_n = held_out.get_int_custom_property("last_n") or None
        queries = build_queries(held_out.uri, catalogue, last_n=last_n)
        towers = pushed_towers(pushed)
        user_tower = item_embeddings = None
        if towers is not None:
            user_tower = user_tower_of(towers.user_tower_uri)
            item_embeddings = self._item_embeddings(input_dict, towers, catalogue, queries)
            queries.protocol["pushed_version"] = towers.version
        result = evaluate(
            catalogue,
            queries,
            user_tower=user_tower,
            item_embeddings=item_embeddings,
            ks=ks,
            ann_backend=exec_properties.get("ann_backend") or None,
        )
        result["ratios"] = ratios(result)
        write_outputs(out.uri, result, exec_properties.get("title") or "Retrieval evaluation")
        for name, metrics in result["methods"].items():
            out.set_float_custom_property(f"{name}_hit_rate@50", metrics.get("hit_rate@50", 0.0))
        logging.info(
            "retrieval eval: %s", {n: m.get("hit_rate@50") for n, m in result["methods"].items()}
        )

    @staticmethod
    def _item_embeddings(input_dict, towers, catalogue: Catalogue, queries) -> np.ndarray:
        """The served embeddings (ItemEmbeddings artifact) in catalogue order, else the
        pushed item tower over the catalogue; the protocol says which."""
        served = input_dict.get("item_embeddings") or []
        if served and served[0].get_int_custom_property("count"):
            queries.protocol["item_embeddings"] = "served (ItemEmbeddings artifact)"
            return served_item_embeddings(served[0].uri, catalogue.ids)
        queries.protocol["item_embeddings"] = "pushed item tower over the catalogue"
        return tower_item_embeddings(towers.item_tower_uri, catalogue.vectors.vectors)


class RetrievalEval(base_component.BaseComponent):
    """Exact retrieval metrics of the pushed towers and two baselines; a report and a plot."""

    SPEC_CLASS = RetrievalEvalSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        pushed_model: types.BaseChannel,
        catalogue: types.BaseChannel,
        held_out: types.BaseChannel,
        item_embeddings: types.BaseChannel | None = None,
        *,
        ks: tuple[int, ...] = (10, 20, 50, 100),
        ann_backend: str | None = "ivf",
        title: str | None = None,
    ):
        spec = RetrievalEvalSpec(
            pushed_model=pushed_model,
            catalogue=catalogue,
            held_out=held_out,
            item_embeddings=item_embeddings,
            ks=",".join(str(int(k)) for k in ks),
            ann_backend=ann_backend,
            title=title,
            metrics=types.Channel(type=RetrievalMetrics),
        )
        super().__init__(spec=spec)
