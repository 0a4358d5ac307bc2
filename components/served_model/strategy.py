"""LatestServedModelStrategy: this pipeline's latest Model that was blessed AND pushed.

TFX's LatestBlessedModelStrategy answers "the latest blessed Model"; a blessed model whose push
failed (or was never attempted: the run stopped after the Evaluator) never served, and neither
the Evaluator's baseline ("is the new model worse than what users get now?") nor the Trainer's
warm start ("start from what is served") should be it. The Pusher (components/pusher) writes a
PushedModel with `pushed` 1 only when it pushed, and pushes only blessed models; so the Model
its execution read under the input key `model`, for the newest PushedModel with `pushed` 1, is
the served model. The lineage is read from ML Metadata's events, as TFX's own strategies do.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

MODEL_KEY = "model"
PUSHED_MODEL_KEY = "pushed_model"
BASE_MODEL_KEY = "base_model"
EXAMPLES_KEY = "examples"
PUSHER_MODEL_INPUT = "model"  # the Pusher's input key for the Model it pushes


def served_model_ids(store, pushed_models: list[types.Artifact]) -> dict[int, types.Artifact]:
    """{model id: its PushedModel} for the PushedModels that record a push (`pushed` 1)."""
    from ml_metadata.proto import metadata_store_pb2

    pushed = {a.id: a for a in pushed_models if a.get_int_custom_property("pushed") == 1}
    if not pushed:
        return {}
    producer = {
        e.artifact_id: e.execution_id
        for e in store.get_events_by_artifact_ids(list(pushed))
        if e.type == metadata_store_pb2.Event.OUTPUT
    }
    served = {}
    for event in store.get_events_by_execution_ids(sorted(set(producer.values()))):
        keys = [step.key for step in event.path.steps if step.HasField("key")]
        if event.type == metadata_store_pb2.Event.INPUT and PUSHER_MODEL_INPUT in keys[:1]:
            for artifact_id, execution_id in producer.items():
                if execution_id == event.execution_id:
                    served[event.artifact_id] = pushed[artifact_id]
    return served


def trained_on(store, model_id: int) -> set[int]:
    """Ids of the Examples the Trainer execution that produced `model_id` read."""
    from ml_metadata.proto import metadata_store_pb2

    producers = [
        e.execution_id
        for e in store.get_events_by_artifact_ids([model_id])
        if e.type == metadata_store_pb2.Event.OUTPUT
    ]
    return {
        e.artifact_id
        for e in store.get_events_by_execution_ids(producers)
        if e.type == metadata_store_pb2.Event.INPUT
        and [s.key for s in e.path.steps if s.HasField("key")][:1] == [EXAMPLES_KEY]
    }


class LatestServedModelStrategy(resolver.ResolverStrategy):
    """ "model": the latest served Model (the Evaluator's baseline), with its "pushed_model";
    "base_model": the Trainer's warm start, the latest served Model not trained on the newest
    Examples ExampleGen wrote (so a run on data already trained on starts where the first one
    did, and TFX's cache holds: re-running a day retrains nothing). Empty lists when nothing
    is served (the first run)."""

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        result = {key: [] for key in input_dict}
        models = input_dict.get(MODEL_KEY) or []
        pushed_models = input_dict.get(PUSHED_MODEL_KEY) or []
        served = served_model_ids(store, pushed_models) if models and pushed_models else {}
        newest = max((a.id for a in input_dict.get(EXAMPLES_KEY) or []), default=None)
        for model in sorted(models, key=lambda a: a.id, reverse=True):
            if model.id not in served:
                continue
            if not result[MODEL_KEY]:
                result[MODEL_KEY] = [model]
                if PUSHED_MODEL_KEY in result:
                    result[PUSHED_MODEL_KEY] = [served[model.id]]
            if BASE_MODEL_KEY in result and newest not in trained_on(store, model.id):
                result[BASE_MODEL_KEY] = [model]
                break
            if BASE_MODEL_KEY not in result:
                break
        return result


def served_model_resolver(example_gen=None, warm_start: bool = True):
    """The Resolver node: outputs["model"] is the served Model (the Evaluator's baseline),
    outputs["base_model"] the Trainer's warm start (with `warm_start`; ExampleGen's
    `examples` are then read after `example_gen` runs). Lists may be empty."""
    from tfx import v1 as tfx

    channels = dict(
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        pushed_model=tfx.dsl.Channel(type=standard_artifacts.PushedModel),
    )
    if warm_start:
        channels[BASE_MODEL_KEY] = tfx.dsl.Channel(type=standard_artifacts.Model)
        channels[EXAMPLES_KEY] = tfx.dsl.Channel(
            type=standard_artifacts.Examples,
            producer_component_id=example_gen.id,
            output_key="examples",
        )
    node = tfx.dsl.Resolver(strategy_class=LatestServedModelStrategy, **channels)
    if warm_start:
        node.add_upstream_node(example_gen)
    return node
