"""StatisticsGen's sampling: its rate from the inputs' size, and what the statistics still
catch at that rate (the drift gate's comparators on TFDV's sampled statistics)."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv

from components.example_gen.inputs import estimated_lines
from components.example_gen.recipe_csv import ITEM_VECTOR, LABEL, USER_VECTOR
from components.example_gen.schema import recipe_schema
from components.validation.drift import measure_drift, over_threshold
from pipeline.configs import BEAM_IN_MEMORY, PipelineConfig
from pipeline.dag import checked_and_transformed, statistics_sample_rate
from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv

DIM = 16
ROWS, BATCH = 20_000, 250  # TFDV samples whole record batches


def test_the_rate_samples_about_the_configured_lines_and_never_small_inputs():
    assert statistics_sample_rate(6_320_256, 500_000) == pytest.approx(0.0791, abs=1e-4)
    assert statistics_sample_rate(400_000, 500_000) == 1.0  # all lines of a small input
    assert statistics_sample_rate(None, 500_000) == 1.0  # size unknown when built: all
    assert statistics_sample_rate(6_320_256, 0) == 1.0  # 0: sampling off


def test_lines_are_estimated_from_bytes_and_unknown_for_spans(tmp_path):
    labels, users, items, _ = demo_samples(DemoData(rows=3000, items=50, user_dim=8, item_dim=8))
    write_recipe_csv(tmp_path / "a" / "train.csv", labels[:2000], users[:2000], items[:2000])
    write_recipe_csv(tmp_path / "b" / "eval.csv", labels[2000:], users[2000:], items[2000:])
    lines = estimated_lines([str(tmp_path / "a" / "train.csv"), str(tmp_path / "b")])
    assert lines == pytest.approx(3000, rel=0.02)
    assert estimated_lines([str(tmp_path / "{SPAN}" / "*.csv")]) is None
    assert estimated_lines([str(tmp_path / "none" / "*.csv")]) is None
    assert estimated_lines(["gs://bucket/train/*.csv"]) is None  # not read when compiling


def test_the_dag_samples_statistics_of_a_big_input_only(tmp_path):
    labels, users, items, _ = demo_samples(DemoData(rows=3000, items=50))
    train = write_recipe_csv(tmp_path / "train.csv", labels, users, items)
    examples = object()  # the channel is only passed through to StatisticsGen

    def stats_options(sample_lines: int):
        config = PipelineConfig(
            train_data=str(train), output_dir=str(tmp_path), statistics_sample_lines=sample_lines
        )
        statistics_gen = checked_and_transformed(config, _channel(examples))["statistics_gen"]
        return statistics_gen.exec_properties.get("stats_options_json")

    assert stats_options(1000) and '"_sample_rate": 0.33' in stats_options(1000)
    assert stats_options(500_000) is None


def _channel(_):
    from tfx.types import channel_utils, standard_artifacts

    return channel_utils.as_channel([standard_artifacts.Examples()])


def _batches(seed: int, shift: float = 0.0) -> list[pa.RecordBatch]:
    labels, users, items, _ = demo_samples(
        DemoData(rows=ROWS, items=500, user_dim=DIM, item_dim=DIM, seed=seed)
    )
    items = items + shift
    out = []
    for start in range(0, ROWS, BATCH):
        rows = slice(start, start + BATCH)
        out.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array([[int(v)] for v in labels[rows]], pa.list_(pa.int64())),
                    pa.array(list(users[rows]), pa.list_(pa.float32())),
                    pa.array(list(items[rows]), pa.list_(pa.float32())),
                ],
                [LABEL, USER_VECTOR, ITEM_VECTOR],
            )
        )
    return out


def _statistics(batches, sample_rate: float, path):
    with beam.Pipeline(argv=BEAM_IN_MEMORY) as pipeline:
        _ = (
            pipeline
            | beam.Create(batches, reshuffle=False)
            | tfdv.GenerateStatistics(tfdv.StatsOptions(sample_rate=sample_rate))
            | tfdv.WriteStatisticsToBinaryFile(str(path))
        )
    return tfdv.load_stats_binary(str(path))


def test_sampled_statistics_still_flag_a_drifted_vector_and_not_sampling_noise(tmp_path):
    """At a quarter of the lines (about 5,000, more than the 3,200-line spans the thresholds
    were set on), a span from the same world is not drift and a shifted item vector is."""
    schema = recipe_schema(DIM, DIM)
    previous = _statistics(_batches(seed=1), 0.25, tmp_path / "previous.pb")
    assert 0 < previous.datasets[0].num_examples < ROWS  # sampled
    same = _statistics(_batches(seed=2), 0.25, tmp_path / "same.pb")
    shifted = _statistics(_batches(seed=2, shift=0.5), 0.25, tmp_path / "shifted.pb")
    limits = dict(label_linf=0.1, vector_js=0.2)  # the configured defaults
    _, calm = measure_drift(same, previous, schema, **limits)
    _, drifted = measure_drift(shifted, previous, schema, **limits)
    assert calm and not over_threshold(calm)
    assert [m[0] for m in over_threshold(drifted)] == [ITEM_VECTOR]
