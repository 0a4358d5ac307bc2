"""TwoTowerPusher: spec, executor, component.

Pushes when the model is blessed (or when no blessing is wired): both towers of the Trainer's
Model artifact as `<serving_dir>/{user_tower,item_tower}/<version>`, each with TF Serving
warm-up records (`components.pusher.warmup`). It does not make the version live: TF Serving
loads what `models.config` names, written by ServingConfig once the version's embeddings and
index are published (components/serving_config; pruning happens there too). The same Model
artifact always gets the same version (a second, cached run pushes nothing new).
Outputs a PushedModel whose custom properties record the pushed towers' exact URIs and
version (`components.pusher.pushed`), plus `pushed_destination` and `pushed_model_uri`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.paths import join
from components.pusher import pushed, serving_layout, warmup
from components.trainer.export import ITEM_TOWER_DIR, USER_TOWER_DIR


class TwoTowerPusherSpec(ComponentSpec):
    PARAMETERS = {
        "serving_dir": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict["model"])
        out = artifact_utils.get_single_instance(output_dict["pushed_model"])
        serving_dir = exec_properties["serving_dir"]
        out.set_string_custom_property("pushed_destination", serving_dir)
        blessings = input_dict.get("model_blessing") or []
        if blessings and not model_utils.is_model_blessed(blessings[0]):
            logging.info("model %s is not blessed: nothing pushed", model.uri)
            pushed.record_towers(out, None)
            return
        version = push_towers(model, serving_dir)
        out.set_string_custom_property("pushed_model_uri", model.uri)
        pushed.record_towers(
            out,
            pushed.PushedTowers(
                version=version,
                user_tower_uri=serving_layout.tower_uri(serving_dir, "user_tower", version),
                item_tower_uri=serving_layout.tower_uri(serving_dir, "item_tower", version),
            ),
        )


def push_towers(model: types.Artifact, serving_dir: str) -> int:
    """Both towers of `model` under one new version, or the version it already has."""
    version = serving_layout.pushed_version_of(serving_dir, model.uri)
    if version is not None:
        logging.info("model %s is already served as version %d", model.uri, version)
        return version
    version = serving_layout.next_version(serving_dir)
    info = {
        "model_uri": model.uri,
        "model_id": model.id,
        "version": version,
        "pushed_at": int(time.time()),
    }
    towers = (("item_tower", ITEM_TOWER_DIR), ("user_tower", USER_TOWER_DIR))
    for _, sub in towers:  # both readable SavedModels before anything is copied
        warmup.signature_inputs(join(model.uri, sub))
    # the item tower first: a client that sees the new user tower finds its items' tower
    for tower, sub in towers:
        serving_layout.publish_version(
            join(model.uri, sub), join(serving_dir, tower), version, info, warmup_name=tower
        )
    logging.info("pushed version %d of both towers to %s", version, serving_dir)
    return version


class TwoTowerPusher(base_component.BaseComponent):
    SPEC_CLASS = TwoTowerPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        serving_dir: str,
        model_blessing: types.BaseChannel | None = None,
    ):
        spec = TwoTowerPusherSpec(
            model=model,
            model_blessing=model_blessing,
            serving_dir=serving_dir,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
