"""DriftGate: the new span's statistics against the previous span's, with TFDV's comparators.

StatisticsGen's statistics of every span ingested so far come from ML Metadata (a Channel of
StatisticsGen's `statistics` across all runs of the pipeline); the previous span's is the one
with the largest span below the new one's. TFDV's drift comparators then measure the
L-infinity distance of the label's distribution (the click rate) and the Jensen-Shannon
divergence of each vector feature's value histogram (the pretrained vectors); thresholds come
from pipeline/configs.py. The Anomalies proto TFDV returns (its `drift_skew_info` names each
feature and distance) is written as this component's ExampleAnomalies either way; over a
threshold DriftCheck stops the run, naming feature and distance, unless `accept_drift` is set.
"""

import logging
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.errors import DataError
from components.example_gen.recipe_csv import ITEM_VECTOR, LABEL, USER_VECTOR

SPLIT = "train"
ANOMALIES_FILE = "SchemaDiff.pb"  # where ExampleValidator writes its Anomalies, per split


def with_drift_comparators(
    schema: schema_pb2.Schema, label_linf: float, vector_js: float
) -> schema_pb2.Schema:
    """A copy of `schema` with TFDV drift comparators: L-infinity on the label, Jensen-Shannon
    on the two vector features."""
    schema = schema_pb2.Schema.FromString(schema.SerializeToString())
    for feature in schema.feature:
        if feature.name == LABEL:
            feature.drift_comparator.infinity_norm.threshold = label_linf
        elif feature.name in (USER_VECTOR, ITEM_VECTOR):
            feature.drift_comparator.jensen_shannon_divergence.threshold = vector_js
    return schema


def drift_measurements(
    anomalies: anomalies_pb2.Anomalies, measured: str = "drift"
) -> list[tuple[str, str, float, float]]:
    """(feature, comparator, distance, threshold) for each drift TFDV measured, or each skew
    with `measured` "skew" (TFDV keeps both in `drift_skew_info`)."""
    found = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for m in getattr(info, f"{measured}_measurements"):
            kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type)
            found.append((feature, kind.removeprefix("DRIFT_SKEW_"), m.value, m.threshold))
    return found


def over_threshold(measurements) -> list[tuple[str, str, float, float]]:
    return [m for m in measurements if m[2] > m[3]]


def measure_drift(current, previous, schema, label_linf: float, vector_js: float):
    """(Anomalies, measurements) of `current` against `previous` (DatasetFeatureStatisticsList);
    `previous` None: no comparison (the first span), an empty Anomalies."""
    import tensorflow_data_validation as tfdv

    if previous is None:
        return anomalies_pb2.Anomalies(), []
    anomalies = tfdv.validate_statistics(
        current,
        with_drift_comparators(schema, label_linf, vector_js),
        previous_statistics=previous,
    )
    return anomalies, drift_measurements(anomalies)


def previous_span(current: types.Artifact, history: list[types.Artifact]):
    """The statistics of the largest span below `current`'s (the newest such artifact), or None."""
    older = [a for a in history if a.span < current.span]
    return max(older, key=lambda a: (a.span, a.id)) if older else None


def _load(artifact: types.Artifact):
    from tfx.components.statistics_gen import stats_artifact_utils

    return stats_artifact_utils.load_statistics(artifact, SPLIT).proto()


def _load_schema(artifact: types.Artifact) -> schema_pb2.Schema:
    from tfx.utils import io_utils

    path = io_utils.get_only_uri_in_dir(artifact.uri)
    return io_utils.parse_pbtxt_file(path, schema_pb2.Schema())


def describe(over) -> str:
    return "; ".join(
        f"feature {f!r}: {kind.lower()} distance {d:.4f} > threshold {t:g}"
        for f, kind, d, t in over
    )


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict):
        import tensorflow as tf

        current = artifact_utils.get_single_instance(input_dict["statistics"])
        previous = previous_span(current, input_dict.get("history") or [])
        schema = _load_schema(artifact_utils.get_single_instance(input_dict["schema"]))
        anomalies, measured = measure_drift(
            _load(current),
            _load(previous) if previous is not None else None,
            schema,
            float(exec_properties["label_linf"]),
            float(exec_properties["vector_js"]),
        )
        out = artifact_utils.get_single_instance(output_dict["anomalies"])
        out.split_names = artifact_utils.encode_split_names([SPLIT])
        folder = os.path.join(out.uri, f"Split-{SPLIT}")
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, ANOMALIES_FILE), "wb") as f:
            f.write(anomalies.SerializeToString())
        over = over_threshold(measured)
        out.span = current.span
        out.set_int_custom_property("previous_span", previous.span if previous else -1)
        worst = max(measured, key=lambda m: m[2] / m[3] if m[3] else 0.0, default=None)
        if worst is not None:
            out.set_string_custom_property("drift_feature", worst[0])
            out.set_float_custom_property("drift_distance", worst[2])
        out.set_int_custom_property("drift_over_threshold", int(bool(over)))
        for feature, kind, distance, threshold in measured:
            logging.info("drift %s %s: %.4f (threshold %g)", feature, kind, distance, threshold)
        if over:
            message = f"span {current.span} drifted from span {previous.span}: {describe(over)}"
            out.set_string_custom_property("drift_message", message)
            out.set_int_custom_property("drift_accepted", int(exec_properties["accept_drift"]))
            logging.warning(message)


@component
def DriftCheck(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:  # noqa: N802
    """Stop the run when DriftGate's record says the span drifted and it was not accepted
    (DriftGate records, this stops: the record is in ML Metadata either way)."""
    if anomalies.get_int_custom_property("drift_over_threshold") and not (
        anomalies.get_int_custom_property("drift_accepted")
    ):
        raise DataError(
            anomalies.get_string_custom_property("drift_message")
            + " (rerun with --accept_drift to train on it)"
        )


class DriftGateSpec(ComponentSpec):
    PARAMETERS = {
        "label_linf": ExecutionParameter(type=float),
        "vector_js": ExecutionParameter(type=float),
        "accept_drift": ExecutionParameter(type=int),
    }
    INPUTS = {
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "history": ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {"anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies)}


class DriftGate(base_component.BaseComponent):
    """Stops the run when the new span drifted from the previous one (unless accepted)."""

    SPEC_CLASS = DriftGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        statistics: types.BaseChannel,
        schema: types.BaseChannel,
        statistics_gen_id: str,
        label_linf: float,
        vector_js: float,
        accept_drift: bool = False,
    ):
        from tfx import v1 as tfx

        # StatisticsGen's output of every run, not only this one's: the previous span's
        history = tfx.dsl.Channel(
            type=standard_artifacts.ExampleStatistics,
            producer_component_id=statistics_gen_id,
            output_key="statistics",
        )
        super().__init__(
            spec=DriftGateSpec(
                statistics=statistics,
                history=history,
                schema=schema,
                label_linf=label_linf,
                vector_js=vector_js,
                accept_drift=int(accept_drift),
                anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
            )
        )
