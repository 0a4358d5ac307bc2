"""Item2Vec component: spec, executor, component.

Trains item2vec (gensim Word2Vec, skip-gram with negative sampling, seeded) over a behaviour
log of the data-rich domain (CSV or Parquet with columns user, item, timestamp and optionally
weight/rating; `components.common.interactions`), each user's items in time order, and
writes into its artifact

    item_vectors.txt       word2vec text format (gensim's KeyedVectors reads it)
    item_vectors.bin       the same, word2vec binary
    item_vectors.parquet   item_id string, vector list<float32>[dim]
    manifest.json          count, dim, parameters, words/s and the log's sha256
                           (`components.item2vec.pretrain`)

Reproducibility: `reproducible=True` (the default) trains with one worker thread, so the same
log, parameters and seed give bit-identical vectors. gensim also asks for a fixed
PYTHONHASHSEED across interpreter launches (gensim 3 seeded initial vectors with `hash()`);
our `pretrain.stable_hash` replaces that use, so the vectors do not depend on it, but the
manifest records the value the run had. `reproducible=False` uses `workers` threads:
faster, not reproducible.

The log is a path parameter, so TFX's cache sees its path, size and modification time
(`log_fingerprint`), not its bytes: write a changed log to a new path or let its mtime move.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import Item2VecVectors
from components.common.files import write_json
from components.common.names import (
    ITEM_VECTORS_BINARY,
    ITEM_VECTORS_PARQUET,
    ITEM_VECTORS_TEXT,
    MANIFEST_FILE,
)
from components.common.paths import (
    absolute,
    input_fingerprint,
    is_remote,
    join,
    local_copy,
    read_bytes,
    upload_files,
)
from components.common.vectors import VECTOR_DIM, Vectors
from components.item2vec.pretrain import PretrainConfig, pretrain

VECTORS_TEXT = ITEM_VECTORS_TEXT
VECTORS_BINARY = ITEM_VECTORS_BINARY
VECTORS_PARQUET = ITEM_VECTORS_PARQUET
OUTPUT_FILES = (VECTORS_TEXT, VECTORS_BINARY, VECTORS_PARQUET, MANIFEST_FILE)


class Item2VecSpec(ComponentSpec):
    PARAMETERS = {
        "log": ExecutionParameter(type=str),
        "log_fingerprint": ExecutionParameter(type=str, optional=True),
        "dim": ExecutionParameter(type=int),
        "window": ExecutionParameter(type=int),
        "min_count": ExecutionParameter(type=int),
        "epochs": ExecutionParameter(type=int),
        "negative": ExecutionParameter(type=int),
        "seed": ExecutionParameter(type=int),
        "reproducible": ExecutionParameter(type=bool),
        "workers": ExecutionParameter(type=int),
        "min_weight": ExecutionParameter(type=float, optional=True),
    }
    INPUTS: dict = {}
    OUTPUTS = {"item_vectors": ChannelParameter(type=Item2VecVectors)}


def pretrain_config(exec_properties: dict[str, Any]) -> PretrainConfig:
    """The PretrainConfig of the component's parameters (workers=1 when reproducible)."""
    reproducible = bool(exec_properties.get("reproducible", True))
    min_weight = exec_properties.get("min_weight")
    return PretrainConfig(
        dim=int(exec_properties["dim"]),
        window=int(exec_properties["window"]),
        min_count=int(exec_properties["min_count"]),
        epochs=int(exec_properties["epochs"]),
        negative=int(exec_properties["negative"]),
        seed=int(exec_properties["seed"]),
        workers=1 if reproducible else int(exec_properties.get("workers") or 1),
        min_weight=None if min_weight is None else float(min_weight),
    )


def write_vectors_parquet(path: str | Path, vectors: Vectors) -> None:
    """`item_id` string and `vector` list<float32> per item, in the word2vec files' order."""
    flat = pa.array(np.ascontiguousarray(vectors.vectors, np.float32).ravel(), pa.float32())
    table = pa.table(
        {
            "item_id": pa.array(vectors.ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.dim).cast(
                pa.list_(pa.float32())
            ),
        }
    )
    pq.write_table(table, path)


def run_item2vec(log: str, uri: str, config: PretrainConfig) -> dict:
    """Pretrain on `log` and write the artifact's files into `uri`; return the manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "out"
        with local_copy(log) as local_log:  # gensim and pyarrow read local files
            result = pretrain(local_log, local, config)
        if is_remote(log):
            result.manifest["input"]["path"] = log  # where the log is, not its local copy
        write_vectors_parquet(local / VECTORS_PARQUET, result.item_vectors)
        manifest = {
            **result.manifest,
            "count": len(result.item_vectors),
            "words_per_second": result.manifest["training"]["words_per_second"],
            "reproducible": config.workers == 1,
            "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
            "files": list(OUTPUT_FILES),
        }
        write_json(local / MANIFEST_FILE, manifest)
        upload_files(local, OUTPUT_FILES, uri)
    return manifest


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        out = artifact_utils.get_single_instance(output_dict["item_vectors"])
        config = pretrain_config(exec_properties)
        manifest = run_item2vec(exec_properties["log"], out.uri, config)
        out.set_int_custom_property("count", manifest["count"])
        out.set_int_custom_property("dim", manifest["dim"])
        out.set_int_custom_property("words_per_second", int(manifest["words_per_second"]))
        logging.info(
            "item2vec: %d items, %d-d, %d words/s",
            manifest["count"],
            manifest["dim"],
            manifest["words_per_second"],
        )


def read_manifest(artifact_uri: str) -> dict:
    """The manifest.json of an Item2VecVectors artifact."""
    return json.loads(read_bytes(join(artifact_uri, MANIFEST_FILE)))


def check_parameters(exec_properties: dict[str, Any]) -> None:
    """Raise a ValueError naming a bad parameter, when the pipeline is built (not mid-run)."""
    pretrain_config(exec_properties)


class Item2Vec(base_component.BaseComponent):
    """Item vectors from a behaviour log (user, item, timestamp)."""

    SPEC_CLASS = Item2VecSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        log: str,
        *,
        dim: int = VECTOR_DIM,
        window: int = 5,
        min_count: int = 5,
        epochs: int = 5,
        negative: int = 5,
        seed: int = 0,
        reproducible: bool = True,
        workers: int = 2,
        min_weight: float | None = None,
    ):
        log = absolute(log)
        parameters = {
            "log": log,
            "log_fingerprint": input_fingerprint(log),
            "dim": dim,
            "window": window,
            "min_count": min_count,
            "epochs": epochs,
            "negative": negative,
            "seed": seed,
            "reproducible": reproducible,
            "workers": workers,
            "min_weight": None if min_weight is None else float(min_weight),
        }
        check_parameters(parameters)
        spec = Item2VecSpec(**parameters, item_vectors=types.Channel(type=Item2VecVectors))
        super().__init__(spec=spec)
