"""From MovieLens behaviour logs to fine-tuned towers: a transfer experiment in three DAGs.

The transfer split (`components.sample_gen.split.transfer_split`): MovieLens has one domain,
so the two are cut from it by time and chance. The data-rich source ("the big app") keeps
every event except a random `target_rate` share of the events after the `target_after`
quantile of time, which become the sparse target ("the new placement"; by default a tenth of
the second half of time: ~5k of ml-100k's 100k ratings). Users and items are
shared, as in the recipe (one item vocabulary, users seen in both); the source keeps running
after the target starts, and sample building only ever looks strictly before each sample's
time. We cut by time and chance rather than by genre or by user because the recipe's setting
is a new placement of the same catalogue for the same users: a genre cut would leave target
items without pretrained vectors, a user cut would leave target users without history.

    source DAG   Item2Vec(source log) -> SampleGen(source log) -> create_pipeline: the
                 DSSM trained from Keras' initialisation, pushed to <out>/source/serving
    transfer DAG Importer(the source's item vectors) -> SampleGen(target log, histories
                 from the source log) -> create_pipeline(base_model = the source's Model)
                 -> RetrievalEval
    scratch DAG  the transfer DAG without base_model: what the transfer start is worth

Each DAG has its own output folder (pipeline root, ML Metadata, serving dir), so the
Evaluator's "latest blessed model" baseline is always of the same DAG. Normalization: each
target run's Transform computes z-scores on its own samples; the fine-tuned weights came
from the source's statistics. Both are means of the same pretrained vectors, so the
statistics are close, and the first epoch adapts the rest (measured, not assumed: the
runner prints transfer against scratch).

Epochs: the recipe learns slowly from Keras' initialisation on small data, so the
MovieLens defaults train longer than the recipe's 2 epochs (see `MovieLensConfig`); the
Evaluator's AUC floor is 0.5 here (the comparison should see every run's towers).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tfx import v1 as tfx

from components.item2vec.component import Item2Vec, Item2VecVectors
from components.retrieval_eval.component import METRICS_FILE, REPORT_FILE, RetrievalEval
from components.sample_gen.component import SampleGen
from components.sample_gen.movielens import load_movielens
from components.sample_gen.split import transfer_split
from components.trainer.training import MODEL_INFO
from pipeline.configs import PipelineConfig
from pipeline.dag import ExamplesSource, create_pipeline

RUNS = ("source", "transfer", "scratch")


@dataclass
class MovieLensConfig:
    """The experiment's knobs; `output_dir` holds data/, source/, transfer/, scratch/."""

    data: str
    output_dir: str
    # transfer split
    target_after: float = 0.5
    target_rate: float = 0.1  # ml-100k: ~5k target events of 100k (0.3: ~15k)
    max_users: int | None = None  # keep the first N users by id (small runs, tests)
    split_seed: int = 0
    # item2vec
    dim: int = 128
    item2vec_epochs: int = 10
    window: int = 5
    min_count: int = 5
    reproducible: bool = True
    # samples
    negatives: int = 4
    last_n: int = 5
    # training
    source_epochs: int = 5
    target_epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 10
    auc_floor: float = 0.5
    seed: int = 0
    # evaluation
    ks: tuple[int, ...] = (10, 20, 50, 100)
    ann_backend: str | None = "ivf"
    scratch: bool = True  # also train the target from Keras' initialisation


def write_if_changed(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file unless the same bytes are there (TFX's cache sees the mtime)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def prepare_logs(config: MovieLensConfig) -> dict[str, Any]:
    """The transfer split of the MovieLens ratings as <out>/data/{source,target}.parquet."""
    log = load_movielens(config.data)
    if config.max_users:
        users = np.unique(log["user"].to_numpy(zero_copy_only=False).astype(np.int64))
        keep = np.isin(
            log["user"].to_numpy(zero_copy_only=False).astype(np.int64),
            users[: config.max_users],
        )
        log = log.filter(pa.array(keep))
    split = transfer_split(
        log,
        target_after=config.target_after,
        target_rate=config.target_rate,
        seed=config.split_seed,
    )
    folder = Path(config.output_dir) / "data"
    return {
        "source": str(write_if_changed(split.source, folder / "source.parquet")),
        "target": str(write_if_changed(split.target, folder / "target.parquet")),
        "source_events": split.source.num_rows,
        "target_events": split.target.num_rows,
        "target_start": split.target_start,
    }


def pipeline_config(config: MovieLensConfig, run: str, **overrides: Any) -> PipelineConfig:
    return PipelineConfig(
        output_dir=os.path.abspath(os.path.join(config.output_dir, run)),
        user_dim=config.dim,
        item_dim=config.dim,
        epochs=config.source_epochs if run == "source" else config.target_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.patience,
        auc_floor=config.auc_floor,
        seed=config.seed,
        pipeline_name=f"movielens-{run}",
        **overrides,
    )


def source_pipeline(config: MovieLensConfig, logs: dict[str, Any]) -> tfx.dsl.Pipeline:
    """Item2Vec on the source log, SampleGen on it, the DSSM trained and pushed."""
    item2vec = Item2Vec(
        logs["source"],
        dim=config.dim,
        window=config.window,
        min_count=config.min_count,
        epochs=config.item2vec_epochs,
        seed=config.seed,
        reproducible=config.reproducible,
    )
    sample_gen = SampleGen(
        item2vec.outputs["item_vectors"],
        logs["source"],
        negatives=config.negatives,
        last_n=config.last_n,
        seed=config.seed,
    )
    source = ExamplesSource(
        components=[item2vec, sample_gen],
        examples=sample_gen.outputs["examples"],
        catalogue=sample_gen.outputs["catalogue"],
    )
    return create_pipeline(pipeline_config(config, "source"), None, None, None, source=source)


def target_pipeline(
    config: MovieLensConfig,
    logs: dict[str, Any],
    item_vectors_uri: str,
    base_model: str | None,
    run: str,
) -> tfx.dsl.Pipeline:
    """SampleGen on the target log with the source's vectors, the DSSM (fine-tuned from
    `base_model`, or from scratch), pushed, then RetrievalEval."""
    vectors = tfx.dsl.Importer(source_uri=item_vectors_uri, artifact_type=Item2VecVectors).with_id(
        "item_vectors_importer"
    )
    sample_gen = SampleGen(
        vectors.outputs["result"],
        logs["target"],
        history_log=logs["source"],
        negatives=config.negatives,
        last_n=config.last_n,
        seed=config.seed,
    )
    source = ExamplesSource(
        components=[vectors, sample_gen],
        examples=sample_gen.outputs["examples"],
        catalogue=sample_gen.outputs["catalogue"],
    )

    def retrieval_eval(nodes: dict) -> list:
        return [
            RetrievalEval(
                pushed_model=nodes["pusher"].outputs["pushed_model"],
                catalogue=nodes["example_gen"].outputs["catalogue"],
                held_out=nodes["example_gen"].outputs["held_out"],
                item_embeddings=nodes["item_embeddings"].outputs["item_embeddings"],
                ks=config.ks,
                ann_backend=config.ann_backend,
                title=f"MovieLens target, {run}",
            )
        ]

    return create_pipeline(
        pipeline_config(config, run, base_model=base_model),
        None,
        None,
        None,
        source=source,
        extend=retrieval_eval,
    )


def latest_artifact_uri(output_dir: str, type_name: str, producer: str | None = None) -> str:
    """The newest live artifact of a type in a run's ML Metadata (optionally by producer
    folder, e.g. "Trainer")."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(output_dir, "metadata.sqlite")
        )
    )
    artifacts = [
        a
        for a in store.get_artifacts_by_type(type_name)
        if a.state == metadata_store_pb2.Artifact.LIVE
        and (producer is None or f"{os.sep}{producer}{os.sep}" in a.uri)
    ]
    if not artifacts:
        raise RuntimeError(f"no {type_name} artifact in {output_dir}'s ML Metadata")
    return max(artifacts, key=lambda a: a.id).uri


def _training_info(model_uri: str) -> dict[str, Any]:
    path = Path(model_uri) / MODEL_INFO
    return json.loads(path.read_text()) if path.exists() else {}


def run_experiment(config: MovieLensConfig) -> dict[str, Any]:
    """Run the source, transfer and (optionally) scratch DAGs; return their figures."""
    logs = prepare_logs(config)
    runner = tfx.orchestration.LocalDagRunner()
    runner.run(source_pipeline(config, logs))
    source_dir = pipeline_config(config, "source").output_dir
    vectors_uri = latest_artifact_uri(source_dir, Item2VecVectors.TYPE_NAME)
    source_model = latest_artifact_uri(source_dir, "Model", producer="Trainer")
    summary: dict[str, Any] = {
        "logs": logs,
        "item_vectors": vectors_uri,
        "item2vec": json.loads((Path(vectors_uri) / "manifest.json").read_text()),
        "source_model": source_model,
        "runs": {"source": {"training": _training_info(source_model)}},
    }
    targets = [("transfer", source_model)] + ([("scratch", None)] if config.scratch else [])
    for run, base_model in targets:
        runner.run(target_pipeline(config, logs, vectors_uri, base_model, run))
        out = pipeline_config(config, run).output_dir
        metrics_uri = latest_artifact_uri(out, "finetower.RetrievalMetrics")
        model_uri = latest_artifact_uri(out, "Model", producer="Trainer")
        summary["runs"][run] = {
            "metrics": json.loads((Path(metrics_uri) / METRICS_FILE).read_text()),
            "report": str(Path(metrics_uri) / REPORT_FILE),
            "model": model_uri,
            "training": _training_info(model_uri),
        }
    return summary


def config_from(**values: Any) -> MovieLensConfig:
    """MovieLensConfig from keyword values, None meaning "the default"."""
    names = {f.name for f in dataclasses.fields(MovieLensConfig)}
    return MovieLensConfig(**{k: v for k, v in values.items() if k in names and v is not None})
