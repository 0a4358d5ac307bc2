"""The console's per-component figures read from ML Metadata artifacts."""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.types import standard_artifacts
from tfx.utils import json_utils

from pipeline.component_figures import _rows


def _statistics(folder, rows: dict[str, int], rates: dict[str, float] | None):
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(folder)
    artifact.split_names = json_utils.dumps(sorted(rows))
    for name, count in rows.items():
        stats = statistics_pb2.DatasetFeatureStatisticsList(
            datasets=[statistics_pb2.DatasetFeatureStatistics(num_examples=count)]
        )
        (folder / f"Split-{name}").mkdir(parents=True)
        (folder / f"Split-{name}" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    if rates is not None:  # as TFX's StatisticsGen records it
        artifact.set_json_value_custom_property("sample_rate_by_split", json_utils.dumps(rates))
    return artifact.mlmd_artifact


def test_rows_of_sampled_statistics_are_scaled_back_and_marked(tmp_path):
    sampled = _statistics(
        tmp_path / "a", {"train": 7_900, "eval": 2_600}, {"train": 0.079, "eval": 1.0}
    )
    assert _rows(sampled) == "eval 2,600 rows, train ~100,000 rows (7,900 sampled)"
    whole = _statistics(tmp_path / "b", {"train": 500}, None)
    assert _rows(whole) == "train 500 rows"
