"""EmbeddingsPublisher component: spec, executor, component.

After ItemEmbeddings, for the version it embedded:
    <output_dir>/ann_index/<version>/   the ANN index (`ann_backend`) over the item embeddings,
                                        their pretrained vectors and a manifest with the
                                        index's recall@100 against exact search
    Redis (when `redis_url` is set)     the version's items published with serving.store's
                                        versioned keys, then one atomic switch to it
and an output artifact whose custom properties say what happened (version, count, ann_dir,
ann_backend, ann_recall_at_100, redis_version, redis_published) beside a manifest.json.

Idempotent (TFX re-runs the steps after the Pusher with unchanged inputs): an existing index
folder is kept, and a pushed version already in the store is never republished or switched
to again.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.errors import ArtifactError
from components.common.files import read_json, write_json
from components.embeddings_publisher import publishing
from components.item_embeddings.component import ItemEmbeddingsArtifact

DEFAULT_BACKEND = "ivf"


class PublishedEmbeddingsArtifact(types.Artifact):
    """What was published of one version: the ANN index folder, the Redis version."""

    TYPE_NAME = "finetower.PublishedEmbeddings"


class EmbeddingsPublisherSpec(ComponentSpec):
    PARAMETERS = {
        "output_dir": ExecutionParameter(type=str),
        "ann_backend": ExecutionParameter(type=str),
        "ann_params": ExecutionParameter(type=str, optional=True),  # JSON, e.g. {"nprobe": 64}
        "redis_url": ExecutionParameter(type=str, optional=True),
        "items": ExecutionParameter(type=str, optional=True),
        "item_dim": ExecutionParameter(type=int),
        "recall_seed": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "item_embeddings": ChannelParameter(type=ItemEmbeddingsArtifact),
        # the pretrained vectors of items embedded without a catalogue (ids are vector hashes)
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"published": ChannelParameter(type=PublishedEmbeddingsArtifact)}


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        embedded = artifact_utils.get_single_instance(input_dict["item_embeddings"])
        out = artifact_utils.get_single_instance(output_dict["published"])
        backend = publishing.check_backend(exec_properties.get("ann_backend") or DEFAULT_BACKEND)
        if not embedded.get_int_custom_property("count"):
            logging.info("no item embeddings (nothing was pushed): nothing published")
            out.set_int_custom_property("count", 0)
            out.set_int_custom_property("redis_published", 0)
            return
        version = embedded.get_int_custom_property("version")
        folder = embedded.get_string_custom_property("published_dir") or embedded.uri
        ids, embeddings, embedded_manifest = publishing.read_item_embeddings(folder)
        tower = publishing.UserTower(
            publishing.user_tower_path_for(embedded_manifest["model"], version)
        )
        final = publishing.ann_dir_for(exec_properties["output_dir"], version)
        seed = exec_properties.get("recall_seed") or 0
        item_vectors = None
        if (final / publishing.MANIFEST_FILE).exists():
            ann = read_json(final / publishing.MANIFEST_FILE)
            if ann.get("version") != version or ann.get("count") != len(ids):
                raise ArtifactError(f"{final} holds another index than version {version}'s")
            logging.info("version %d already indexed at %s", version, final)
        else:
            item_vectors, vectors_source = self._pretrained(
                input_dict, exec_properties, ids, embedded_manifest
            )
            queries, how = publishing.sample_queries(
                tower,
                item_vectors,
                publishing.RECALL_QUERIES,
                seed,
            )
            ann = publishing.build_ann_index(
                final,
                ids,
                embeddings,
                backend,
                queries,
                item_vectors,
                params=json.loads(exec_properties.get("ann_params") or "{}"),
                extra={
                    "version": version,
                    "output_bias": tower.bias,
                    "user_dim": tower.user_dim,
                    "user_tower": tower.path,
                    "item_tower": embedded_manifest["model"],
                    "item_embeddings": str(folder),
                    "pretrained_items": vectors_source,
                    "recall_query_source": how,
                    "recall_seed": seed,
                },
            )
            logging.info(
                "version %d: %s index of %d items, recall@%d %.4f",
                version,
                backend,
                len(ids),
                ann["recall_k"],
                ann["ann_recall"],
            )
        manifest = {
            "version": version,
            "count": len(ids),
            "ann_dir": str(final),
            "ann_backend": ann["backend"],
            "ann_params": ann["params"],
            "ann_recall_at_100": ann["ann_recall"],
            "recall_queries": ann["recall_queries"],
            "bias": ann["output_bias"],
        }
        redis_url = exec_properties.get("redis_url") or None
        store = None
        if redis_url:
            if item_vectors is None and ann.get("item_vectors"):
                item_vectors = np.load(final / ann["item_vectors"], allow_pickle=False)
            store = publishing.publish_once(
                redis_url,
                version,
                ids,
                embeddings,
                item_vectors,
                float(ann["output_bias"]),
                source={
                    "pushed_version": version,
                    "ann_index": str(final),
                    "item_embeddings": str(folder),
                    "user_tower": tower.path,
                },
            )
            logging.info("Redis: %s", store.reason)
            manifest["redis"] = {
                "published": store.published,
                "store_version": store.store_version,
                "current": store.current,
                "reason": store.reason,
                **({"report": store.report} if store.report else {}),
            }
        write_json(os.path.join(out.uri, publishing.MANIFEST_FILE), manifest)
        out.set_int_custom_property("version", version)
        out.set_int_custom_property("count", len(ids))
        out.set_string_custom_property("ann_dir", str(final))
        out.set_string_custom_property("ann_backend", ann["backend"])
        out.set_float_custom_property("ann_recall_at_100", float(ann["ann_recall"]))
        out.set_int_custom_property("redis_published", int(bool(store and store.published)))
        out.set_string_custom_property("redis_version", (store and store.store_version) or "")

    @staticmethod
    def _pretrained(input_dict, exec_properties, ids, embedded_manifest):
        """The embedded items' pretrained vectors (index row order) and where they came from."""
        item_dim = exec_properties["item_dim"]
        catalogue = exec_properties.get("items") or None
        source = embedded_manifest.get("source")
        if catalogue is None and source and os.path.isfile(str(source)):
            catalogue = str(source)
        if catalogue is not None:
            source_ids, vectors = publishing.catalogue_vectors(catalogue, item_dim)
            return publishing.align_vectors(ids, source_ids, vectors, catalogue), catalogue
        examples = input_dict.get("examples") or []
        if not examples:
            logging.warning(
                "no item catalogue and no Examples: the index has no pretrained item vectors "
                "(the recall service cannot turn histories into user vectors)"
            )
            return None, None
        artifact = examples[0]
        patterns = [
            os.path.join(artifact_utils.get_split_uri([artifact], split), "*")
            for split in artifact_utils.decode_split_names(artifact.split_names)
        ]
        source_ids, vectors = publishing.example_item_vectors(patterns, item_dim)
        return publishing.align_vectors(ids, source_ids, vectors, artifact.uri), artifact.uri


class EmbeddingsPublisher(base_component.BaseComponent):
    SPEC_CLASS = EmbeddingsPublisherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        item_embeddings: types.BaseChannel,
        output_dir: str,
        ann_backend: str = DEFAULT_BACKEND,
        ann_params: dict[str, Any] | None = None,
        redis_url: str | None = None,
        examples: types.BaseChannel | None = None,
        items: str | None = None,
        item_dim: int = 128,
        recall_seed: int = 0,
    ):
        spec = EmbeddingsPublisherSpec(
            item_embeddings=item_embeddings,
            examples=examples,
            output_dir=output_dir,
            ann_backend=publishing.check_backend(ann_backend),
            ann_params=json.dumps(ann_params, sort_keys=True) if ann_params else None,
            redis_url=redis_url,
            items=items,
            item_dim=item_dim,
            recall_seed=recall_seed,
            published=types.Channel(type=PublishedEmbeddingsArtifact),
        )
        super().__init__(spec=spec)


def publisher_for(
    config,
    item_embeddings: types.BaseChannel,
    examples: types.BaseChannel | None = None,
    items: str | None = None,
    ann_params: dict[str, Any] | None = None,
) -> EmbeddingsPublisher:
    """The publisher as `create_pipeline` adds it after ItemEmbeddings (`config`: a
    PipelineConfig; `examples`: the pipeline's Examples, whose item vectors are the pretrained
    vectors of items embedded without a catalogue; `items`: the catalogue, default
    `config.items`; `ann_params`: the index backend's parameters, e.g. `{"nprobe": 64}`)."""
    output_dir = config.output_dir
    return EmbeddingsPublisher(
        item_embeddings=item_embeddings,
        examples=examples,
        output_dir=os.path.abspath(output_dir) if "://" not in output_dir else output_dir,
        ann_backend=config.ann_backend,
        ann_params=ann_params,
        redis_url=config.redis_url,
        items=items or config.items,
        item_dim=config.item_dim,
    )
