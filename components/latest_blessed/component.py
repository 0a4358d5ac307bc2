"""LatestBlessedModel: the Evaluator's baseline as a container step, for open-source KFP.

Open-source Kubeflow Pipelines 2.x runs container and importer executors only; its compiler
answers "resolver executors not implemented" for TFX's Resolver (LatestBlessedModelStrategy),
which the local and Vertex DAGs use. This component makes the same decision in a plain step.

Where the decision comes from: the serving dir's push records, not ML Metadata. The Pusher
pushes a model only when it is blessed, and writes with each version
`assets.extra/finetower_push.json` naming the Model artifact it came from; the newest version
whose two towers are complete is therefore the latest blessed (and served) model of this
pipeline. The records live on the same object store as the artifacts and are read with
`tf.io.gfile`, so the step needs nothing from the cluster. ML Metadata as KFP deploys it was
the alternative, rejected because: the step would need the metadata-grpc service's address and
a client of its version inside the image; KFP's launcher records its own contexts and types,
not the TFX ones LatestBlessedModelStrategy reads (the blessing's `current_model_id` refers to
ids the TFX executor never sees there); and a test here could not run it. One difference is
intended: a blessed model whose push failed is not a baseline (it never served).

The output is a Model artifact holding a copy of the baseline (an executor cannot point its
output at another URI on every backend). Without any pushed model the baseline is the
candidate itself: the Evaluator's change threshold then compares the model with itself and
passes, exactly as TFX's Evaluator passes it without a baseline, while the AUC floor still
decides. The step reads state outside its inputs, so runner.py disables its cache on KFP.

ServedModel is the same decision made BEFORE the Trainer, for its warm start on open-source KFP
(the local runner resolves it in ML Metadata, Vertex with TFX's LatestBlessedModelStrategy): its
Model is a copy of the latest pushed model, or, before anything was pushed, an empty Model whose
record says `found` 0, from which the Trainer trains from initialisation (warm_start.py).
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
from tfx import types
from tfx import version as tfx_version
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.names import SAVED_MODEL_FILE, TOWERS, USER_TOWER
from components.common.paths import copy_tree, join
from components.latest_blessed import warm_start
from components.pusher import serving_layout

SERVING_MODEL_DIR = "Format-Serving"


def latest_pushed_model(serving_dir: str) -> tuple[int, str] | None:
    """(version, Model artifact URI recorded with it) for the newest version whose two towers
    are complete (their `saved_model.pb` present) and whose model is still readable."""
    for version in reversed(serving_layout.versions(join(serving_dir, USER_TOWER))):
        folders = [join(serving_dir, tower, str(version)) for tower in TOWERS]
        if not all(tf.io.gfile.exists(join(f, SAVED_MODEL_FILE)) for f in folders):
            continue  # a push in progress or interrupted
        uri = (serving_layout.read_push_info(folders[0]) or {}).get("model_uri")
        if uri and tf.io.gfile.isdir(join(uri, SERVING_MODEL_DIR)):
            return version, uri
        if uri:
            logging.warning("version %d was pushed from %s, which is gone", version, uri)
    return None


def latest_pushed_model_uri(serving_dir: str) -> str | None:
    """The Model URI of `latest_pushed_model`, None if nothing usable was pushed."""
    latest = latest_pushed_model(serving_dir)
    return latest[1] if latest else None


class LatestBlessedModelSpec(ComponentSpec):
    PARAMETERS = {"serving_dir": ExecutionParameter(type=str)}
    INPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {"baseline": ChannelParameter(type=standard_artifacts.Model)}


class Executor(base_executor.BaseExecutor):
    def Do(
        self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict
    ) -> None:
        candidate = artifact_utils.get_single_instance(input_dict["model"])
        baseline = artifact_utils.get_single_instance(output_dict["baseline"])
        pushed = latest_pushed_model_uri(exec_properties["serving_dir"])
        source = pushed or candidate.uri
        copy_tree(source, baseline.uri)
        baseline.set_string_custom_property("baseline_model_uri", source)
        baseline.set_int_custom_property("baseline_is_candidate", int(pushed is None))
        logging.info("baseline: %s%s", source, "" if pushed else " (the candidate itself)")


class LatestBlessedModel(base_component.BaseComponent):
    """The latest pushed (hence blessed) model of this serving dir, else `model` itself."""

    SPEC_CLASS = LatestBlessedModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, serving_dir: Any):
        super().__init__(
            spec=LatestBlessedModelSpec(
                model=model,
                serving_dir=serving_dir,
                baseline=types.Channel(type=standard_artifacts.Model),
            )
        )


class ServedModelSpec(ComponentSpec):
    PARAMETERS = {"serving_dir": ExecutionParameter(type=str)}
    INPUTS = {}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class ServedModelExecutor(base_executor.BaseExecutor):
    def Do(
        self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict
    ) -> None:
        model = artifact_utils.get_single_instance(output_dict["model"])
        serving_dir = exec_properties["serving_dir"]
        latest = latest_pushed_model(serving_dir)
        if latest is None:
            record = warm_start.not_found(serving_dir)
            tf.io.gfile.makedirs(model.uri)
        else:
            version, source = latest
            copy_tree(source, model.uri)
            record = warm_start.found(serving_dir, version, source)
        warm_start.write_record(model.uri, record)
        model.set_int_custom_property("found", record["found"])
        model.set_string_custom_property("served_model_uri", record.get("model_uri", ""))
        # a Model without it is read as old-style, its Format-Serving folder not found (tfx#4151)
        model.set_string_custom_property("tfx_version", tfx_version.__version__)
        logging.info("warm start: %s", warm_start.describe(record))


class ServedModel(base_component.BaseComponent):
    """The Trainer's warm start on open-source KFP: a copy of the latest model pushed to
    `serving_dir`, else an empty Model recorded as not found (the Trainer then starts from
    initialisation)."""

    SPEC_CLASS = ServedModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServedModelExecutor)

    def __init__(self, serving_dir: Any):
        super().__init__(
            spec=ServedModelSpec(
                serving_dir=serving_dir, model=types.Channel(type=standard_artifacts.Model)
            )
        )
