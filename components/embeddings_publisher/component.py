"""EmbeddingsPublisher component: spec, executor, component.

After ItemEmbeddings, for the version it embedded (towers and embeddings read from the
ItemEmbeddings artifact):
    <artifact uri>/ann_index/           the ANN index (`ann_backend`) over the item embeddings,
                                        their pretrained vectors and a manifest with the
                                        index's recall@100 against exact search
    <output_dir>/ann_index/<version>/   a copy of it, published complete (users and the
                                        recall service read this one)
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
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import ItemEmbeddingsArtifact, PublishedEmbeddingsArtifact
from components.common.memory import release_freed_memory
from components.common.names import ANN_DIR, MANIFEST_FILE
from components.common.paths import absolute, input_fingerprint, join, write_bytes
from components.common.user_vectors import DEFAULT_LAST_N, UserVectorRecipe
from components.common.vectors import VECTOR_DIM
from components.embeddings_publisher import publishing
from components.embeddings_publisher.ann import PretrainedSource
from components.item_embeddings.embeddings import read_manifest
from components.pusher.pushed import pushed_towers

DEFAULT_BACKEND = "ivf"


class EmbeddingsPublisherSpec(ComponentSpec):
    PARAMETERS = {
        "output_dir": ExecutionParameter(type=str),
        "ann_backend": ExecutionParameter(type=str),
        "ann_params": ExecutionParameter(type=str, optional=True),  # JSON, e.g. {"nprobe": 64}
        "redis_url": ExecutionParameter(type=str, optional=True),
        "items": ExecutionParameter(type=str, optional=True),
        # the catalogue file's size and mtime: changed content at the same path runs again
        "items_fingerprint": ExecutionParameter(type=str, optional=True),
        "item_dim": ExecutionParameter(type=int),
        "recall_seed": ExecutionParameter(type=int, optional=True),
        # how training made user vectors from histories (the version's recipe; serving uses
        # it): the last N items (0: the whole history), an optional half-life in positions
        "user_vector_last_n": ExecutionParameter(type=int, optional=True),
        "user_vector_half_life": ExecutionParameter(type=float, optional=True),
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
        release_freed_memory()  # what earlier components in this process freed
        embedded = artifact_utils.get_single_instance(input_dict["item_embeddings"])
        out = artifact_utils.get_single_instance(output_dict["published"])
        backend = publishing.check_backend(exec_properties.get("ann_backend") or DEFAULT_BACKEND)
        towers = pushed_towers(embedded)
        if towers is None or not embedded.get_int_custom_property("count"):
            logging.info("no item embeddings (nothing was pushed): nothing published")
            out.set_int_custom_property("count", 0)
            out.set_int_custom_property("redis_published", 0)
            return
        result = publishing.publish_version(
            embedded.uri,
            towers,
            exec_properties["output_dir"],
            pretrained_source(input_dict, exec_properties, read_manifest(embedded.uri)),
            index_dir=join(out.uri, ANN_DIR),
            backend=backend,
            params=json.loads(exec_properties.get("ann_params") or "{}"),
            seed=exec_properties.get("recall_seed") or 0,
            redis_url=exec_properties.get("redis_url") or None,
            recipe=recipe_from_properties(exec_properties),
        )
        write_bytes(join(out.uri, MANIFEST_FILE), json.dumps(result.manifest(), indent=2).encode())
        store = result.store
        out.set_int_custom_property("version", result.version)
        out.set_int_custom_property("count", result.count)
        out.set_string_custom_property("ann_dir", result.ann_dir)
        out.set_string_custom_property("ann_backend", result.ann["backend"])
        out.set_float_custom_property("ann_recall_at_100", float(result.ann["ann_recall"]))
        out.set_int_custom_property("redis_published", int(bool(store and store.published)))
        out.set_string_custom_property("redis_version", (store and store.store_version) or "")
        recipe = result.ann.get(publishing.RECIPE_KEY)
        out.set_string_custom_property(
            publishing.RECIPE_KEY, json.dumps(recipe, sort_keys=True) if recipe else ""
        )


def recipe_from_properties(exec_properties: dict[str, Any]) -> UserVectorRecipe:
    """The training recipe the component was given (unset: the recipe's last 5, no decay)."""
    last_n = exec_properties.get("user_vector_last_n")
    half_life = exec_properties.get("user_vector_half_life")
    return UserVectorRecipe(
        last_n=DEFAULT_LAST_N if last_n is None else (int(last_n) or None),
        half_life=float(half_life) if half_life else None,
    )


def pretrained_source(
    input_dict: dict[str, list], exec_properties: dict[str, Any], embedded: dict[str, Any]
) -> PretrainedSource:
    """The `items` file, else the catalogue the items were embedded from (the manifest's
    `catalogue`), else the Examples."""
    catalogue = exec_properties.get("items") or embedded.get("catalogue") or None
    examples = input_dict.get("examples") or []
    return PretrainedSource(
        catalogue, examples[0] if examples else None, exec_properties["item_dim"]
    )


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
        item_dim: int = VECTOR_DIM,
        recall_seed: int = 0,
        recipe: UserVectorRecipe | None = None,
    ):
        recipe = recipe or UserVectorRecipe()
        spec = EmbeddingsPublisherSpec(
            item_embeddings=item_embeddings,
            examples=examples,
            output_dir=output_dir,
            ann_backend=publishing.check_backend(ann_backend),
            ann_params=json.dumps(ann_params, sort_keys=True) if ann_params else None,
            redis_url=redis_url,
            items=absolute(items) if items else None,
            items_fingerprint=input_fingerprint(items) or None,
            item_dim=item_dim,
            recall_seed=recall_seed,
            user_vector_last_n=recipe.last_n or 0,
            user_vector_half_life=recipe.half_life,
            published=types.Channel(type=PublishedEmbeddingsArtifact),
        )
        super().__init__(spec=spec)


def publisher_for(
    config,
    item_embeddings: types.BaseChannel,
    examples: types.BaseChannel | None = None,
    items: str | None = None,
    ann_params: dict[str, Any] | None = None,
    recipe: UserVectorRecipe | None = None,
) -> EmbeddingsPublisher:
    """The publisher as `create_pipeline` adds it after ItemEmbeddings (`config`: a
    PipelineConfig; `examples`: the pipeline's Examples, whose item vectors are the pretrained
    vectors of items embedded without a catalogue; `items`: the catalogue, default
    `config.items`; `ann_params`: the index backend's parameters, e.g. `{"nprobe": 64}`;
    `recipe`: how training made user vectors, default `config.user_vector_recipe()`)."""
    output_dir = config.output_dir
    return EmbeddingsPublisher(
        item_embeddings=item_embeddings,
        examples=examples,
        output_dir=absolute(output_dir),
        ann_backend=config.ann_backend,
        ann_params=ann_params,
        redis_url=config.redis_url,
        items=items or config.items,
        item_dim=config.item_dim,
        recipe=recipe or config.user_vector_recipe(),
    )
