"""ItemEmbeddings component: spec, executor, component.

After a push, runs the pushed item tower (`serving_default`) over the item catalogue (a
`catalogue` artifact's `catalogue.txt` (SampleGen's, ids the items'), else an `items` file,
else the distinct item vectors of the Examples, ids their hashes; `graph.embed_items`) and
writes

    <artifact uri>/embeddings.parquet   item_id string, embedding list<float32>[dim]
    <artifact uri>/manifest.json        version, towers, count, dim, unmatched training items
    <output_dir>/item_embeddings/<version>/  a copy of the two files, published complete

with the version of the push. The artifact records the pushed towers it embedded with
(`components.pusher.pushed`), so later stages read them from it. The same pushed version is
never embedded twice: a version already published is copied into the artifact.

A catalogue is known by its content (`catalogue_sha256` in the manifest), not its path: the
same bytes at another path are the same catalogue; changed bytes (new items, re-pretrained
vectors) given for a version already embedded are not mixed into it — the artifact says so
(`catalogue_changed` 1, a warning) and the next pushed version embeds them. Each push embeds
the whole catalogue given to it, so a catalogue that grows is served from the next version.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import ItemCatalogue, ItemEmbeddingsArtifact
from components.common.memory import release_freed_memory
from components.common.names import (
    CATALOGUE_TEXT,
    EMBEDDINGS_FILE,
    ITEM_EMBEDDINGS_DIR,
    MANIFEST_FILE,
)
from components.common.paths import absolute, input_fingerprint, join
from components.common.publish import publish_files
from components.common.vectors import VECTOR_DIM
from components.item_embeddings.embeddings import (
    catalogue_change,
    content_sha256,
    read_manifest,
    rewrite_manifest,
)
from components.item_embeddings.graph import ItemSource, embed_items
from components.pusher.pushed import pushed_towers, record_towers

__all__ = ["ItemEmbeddings", "ItemEmbeddingsArtifact", "published_dir_for"]


class ItemEmbeddingsSpec(ComponentSpec):
    PARAMETERS = {
        "output_dir": ExecutionParameter(type=str),
        "items": ExecutionParameter(type=str, optional=True),
        # the catalogue file's size and mtime: changed content at the same path embeds again
        "items_fingerprint": ExecutionParameter(type=str, optional=True),
        "item_dim": ExecutionParameter(type=int),
    }
    INPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "catalogue": ChannelParameter(type=ItemCatalogue, optional=True),
    }
    OUTPUTS = {"item_embeddings": ChannelParameter(type=ItemEmbeddingsArtifact)}


def published_dir_for(output_dir: str, version: int) -> str:
    """`<output_dir>/item_embeddings/<version>`: the copy users and the recall service read."""
    return join(output_dir, ITEM_EMBEDDINGS_DIR, str(int(version)))


def item_source(input_dict: dict[str, list], exec_properties: dict[str, Any]) -> ItemSource:
    """A catalogue artifact (its ids are the Examples' item_id: match on ids), else the
    `items` file (ids matched on vector hashes), else the Examples' own items."""
    catalogues = input_dict.get("catalogue") or []
    if catalogues:
        catalogue, by_id = join(catalogues[0].uri, CATALOGUE_TEXT), True
    else:
        catalogue, by_id = exec_properties.get("items") or None, False
    return ItemSource(catalogue, exec_properties["item_dim"], by_id)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        release_freed_memory()  # what earlier components in this process freed
        towers = pushed_towers(artifact_utils.get_single_instance(input_dict["pushed_model"]))
        out = artifact_utils.get_single_instance(output_dict["item_embeddings"])
        record_towers(out, towers)
        if towers is None:
            logging.info("nothing was pushed: no item embeddings")
            out.set_int_custom_property("count", 0)
            return
        published = published_dir_for(exec_properties["output_dir"], towers.version)
        out.set_int_custom_property("version", towers.version)
        out.set_string_custom_property("published_dir", published)
        manifest = read_manifest(published)
        files = [EMBEDDINGS_FILE, MANIFEST_FILE]
        source = item_source(input_dict, exec_properties)
        if manifest is not None:
            logging.info(
                "version %d already embedded (%d items)", towers.version, manifest["count"]
            )
            for name in files:  # the artifact holds its data either way
                tf.io.gfile.copy(join(published, name), join(out.uri, name), overwrite=True)
            changed = catalogue_change(manifest, source.catalogue)
            if changed:
                logging.warning("%s", changed)
            out.set_int_custom_property("catalogue_changed", int(bool(changed)))
        else:
            examples = artifact_utils.get_single_instance(input_dict["examples"])
            # hashed before it is read: a file replaced meanwhile is then a change next time
            digest = content_sha256(source.catalogue) if source.catalogue else None
            with self._make_beam_pipeline() as pipeline:
                embed_items(pipeline, examples, source, towers, out.uri)
            manifest = read_manifest(out.uri)
            if digest:  # what was embedded, by content
                manifest["catalogue_sha256"] = digest
                rewrite_manifest(out.uri, manifest)
            publish_files({n: join(out.uri, n) for n in files}, published, last=MANIFEST_FILE)
            out.set_int_custom_property("catalogue_changed", 0)
        out.set_int_custom_property("count", manifest["count"])
        out.set_string_custom_property("catalogue_sha256", manifest.get("catalogue_sha256") or "")


class ItemEmbeddings(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = ItemEmbeddingsSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        pushed_model: types.BaseChannel,
        examples: types.BaseChannel,
        output_dir: str,
        item_dim: int = VECTOR_DIM,
        items: str | None = None,
        catalogue: types.BaseChannel | None = None,
    ):
        items = absolute(items) if items else None
        spec = ItemEmbeddingsSpec(
            pushed_model=pushed_model,
            examples=examples,
            catalogue=catalogue,
            output_dir=output_dir,
            items=items,
            items_fingerprint=input_fingerprint(items) or None,
            item_dim=item_dim,
            item_embeddings=types.Channel(type=ItemEmbeddingsArtifact),
        )
        super().__init__(spec=spec)
