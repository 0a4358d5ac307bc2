"""ServingConfig component: spec, executor, component — the step after the
EmbeddingsPublisher that makes a published version live.

For the version the publisher published (its artifact's `version`), in order:
    1. check the version is complete: both towers pushed, its index at
       `<output_dir>/ann_index/<version>` published (manifest.json present)
    2. infra-validate it (`validate`): a model server loads it and answers
    3. write `<serving_dir>/models.config` naming it, the version served before it, Redis
       `current` and a rollback pin (`lifecycle.plan`), atomically
    4. prune: orphans of crashed pushes, then versions nothing names beyond `keep_versions`
A failure at 1 or 2 fails the run with the reason, and the config keeps naming what it named.
Outputs an InfraBlessing (`blessed` 1, `infra_report` JSON) whose manifest.json records it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.artifacts import PublishedEmbeddingsArtifact
from components.common.errors import ArtifactError
from components.common.names import MANIFEST_FILE
from components.common.paths import join, write_bytes
from components.embeddings_publisher.ann import ann_uri
from components.pusher import serving_layout
from components.serving_config import lifecycle, validate
from components.serving_config.holders import holders


class ServingConfigSpec(ComponentSpec):
    PARAMETERS = {
        "serving_dir": ExecutionParameter(type=str),
        "output_dir": ExecutionParameter(type=str),
        "base_path_prefix": ExecutionParameter(type=str, optional=True),
        "keep_versions": ExecutionParameter(type=int, optional=True),
        "redis_url": ExecutionParameter(type=str, optional=True),
        "infra_validate": ExecutionParameter(type=int, optional=True),
        "labels_for_unavailable": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {"published": ChannelParameter(type=PublishedEmbeddingsArtifact)}
    OUTPUTS = {"blessing": ChannelParameter(type=standard_artifacts.InfraBlessing)}


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        published = artifact_utils.get_single_instance(input_dict["published"])
        out = artifact_utils.get_single_instance(output_dict["blessing"])
        if not published.get_int_custom_property("count"):
            logging.info("nothing was published: models.config left as it is")
            out.set_int_custom_property("blessed", 0)
            return
        report = serve_version(
            exec_properties["serving_dir"],
            exec_properties["output_dir"],
            published.get_int_custom_property("version"),
            base_path_prefix=exec_properties.get("base_path_prefix") or None,
            keep=exec_properties.get("keep_versions") or 0,
            redis_url=exec_properties.get("redis_url") or None,
            infra_validate=bool(exec_properties.get("infra_validate", 1)),
            labels_for_unavailable=bool(exec_properties.get("labels_for_unavailable")),
        )
        write_bytes(join(out.uri, MANIFEST_FILE), json.dumps(report, indent=2).encode())
        out.set_int_custom_property("blessed", 1)
        out.set_int_custom_property("version", report["version"])
        out.set_string_custom_property("named_versions", json.dumps(report["named"]))


def check_complete(serving_dir: str, output_dir: str, version: int) -> None:
    """Both towers pushed and the index published, else ArtifactError naming what lacks."""
    if version not in lifecycle.complete_versions(serving_dir):
        raise ArtifactError(
            f"version {version} is not completely pushed under {serving_dir} (both towers' "
            f"saved_model.pb and push record): not naming it in models.config"
        )
    index = ann_uri(output_dir, version)
    if not tf.io.gfile.exists(join(index, MANIFEST_FILE)):
        raise ArtifactError(f"version {version} has no published index at {index}: not serving it")


def serve_version(
    serving_dir: str,
    output_dir: str,
    version: int,
    *,
    base_path_prefix: str | None = None,
    keep: int = 0,
    redis_url: str | None = None,
    infra_validate: bool = True,
    labels_for_unavailable: bool = False,
) -> dict:
    """Steps 1-4 of the module docstring for `version`; what was done, as a dict."""
    check_complete(serving_dir, output_dir, version)
    previous = lifecycle.config_versions(serving_layout.read_config(serving_dir), serving_dir)
    infra = None
    if infra_validate and version not in previous[0]:
        infra = validate.validate_version(serving_dir, version)
    plan = lifecycle.plan(
        version,
        lifecycle.complete_versions(serving_dir),
        previous,
        holders(serving_dir, redis_url),
        keep=keep,
        orphans=lifecycle.orphan_versions(serving_dir, below=version),
        labels_for_unavailable=labels_for_unavailable,
    )
    config = serving_layout.models_config(
        serving_dir, base_path_prefix, specific=plan.named, labels=plan.labels
    )
    serving_layout.write_config(serving_dir, config)
    logging.info("models.config names %s, labels %s", plan.named, plan.labels)
    lifecycle.delete_versions(serving_dir, plan.orphans + plan.prune)
    if plan.orphans or plan.prune:
        logging.info("removed orphans %s, pruned %s", plan.orphans, plan.prune)
    return {"version": version, "infra_validation": infra, **plan.to_dict()}


class ServingConfig(base_component.BaseComponent):
    SPEC_CLASS = ServingConfigSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        published: types.BaseChannel,
        serving_dir: str,
        output_dir: str,
        base_path_prefix: str | None = None,
        keep_versions: int = 0,
        redis_url: str | None = None,
        infra_validate: bool = True,
        labels_for_unavailable: bool = False,
    ):
        spec = ServingConfigSpec(
            published=published,
            serving_dir=serving_dir,
            output_dir=output_dir,
            base_path_prefix=base_path_prefix,
            keep_versions=keep_versions,
            redis_url=redis_url,
            infra_validate=int(infra_validate),
            labels_for_unavailable=int(labels_for_unavailable),
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        )
        super().__init__(spec=spec)
