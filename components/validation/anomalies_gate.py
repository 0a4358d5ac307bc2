"""AnomaliesGate: fail the run when ExampleValidator found anomalies.

ExampleValidator only records whether the data is blessed; it never stops a run. This
component raises, naming each anomaly, so nothing downstream (Transform, Trainer, Pusher)
runs on data that does not match the schema.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.common.errors import DataError

ANOMALIES_FILE = "SchemaDiff.pb"


def read_anomalies(anomalies: types.Artifact) -> dict:
    """Split name -> the Anomalies proto ExampleValidator wrote for it."""
    import tensorflow as tf

    found = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            found[split] = anomalies_pb2.Anomalies.FromString(f.read())
    return found


def describe(found: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per anomaly: `split: feature: description`."""
    lines = []
    for split, anomalies in sorted(found.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reason = info.description or info.short_description
            lines.append(f"split {split}, feature {feature!r}: {reason}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"split {split}: {info.description or info.short_description}")
    return lines


@component
def AnomaliesGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:  # noqa: N802
    """Raise DataError listing every anomaly; pass when there are none."""
    lines = describe(read_anomalies(anomalies))
    if lines:
        raise DataError("the examples do not match the schema: " + "; ".join(lines))
