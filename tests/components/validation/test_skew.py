"""SkewCheck (components/validation/skew.py): the recall service's logged user vectors against
the training Examples', by TFDV per dimension; its executor on hand-built artifacts, and its
place in the DAG (only with a serving log)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2
from tfx.types import standard_artifacts

from components.common.errors import DataError
from components.validation import skew
from pipeline.configs import PipelineConfig
from serving.recall.skew_log import write_log_file

DIM = 8


def write_examples(
    folder: Path, vectors: np.ndarray, files: int = 2
) -> standard_artifacts.Examples:
    """An Examples artifact whose train split holds `vectors` as `user_vector`, in `files`
    TFRecord files (no item vectors: SkewCheck reads only the user side)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(folder)
    examples.split_names = json.dumps(["train", "eval"])
    split = folder / "Split-train"
    split.mkdir(parents=True)
    for part, rows in enumerate(np.array_split(vectors, files)):
        with tf.io.TFRecordWriter(str(split / f"data-{part}.tfrecord")) as writer:
            for row in rows:
                feature = {
                    "user_vector": tf.train.Feature(float_list=tf.train.FloatList(value=row))
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return examples


def run_skew_check(tmp_path: Path, examples, log_dir: Path, vector_js: float = 0.1):
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(tmp_path / "statistics")
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    skew.Executor().Do(
        {"examples": [examples]},
        {"statistics": [statistics], "anomalies": [anomalies]},
        {
            "serving_log": str(log_dir),
            "user_dim": DIM,
            "vector_js": vector_js,
            "max_rows": 100_000,
        },
    )
    return statistics, anomalies


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4000, DIM)).astype(np.float32)
    return {"vectors": vectors, "examples": write_examples(tmp_path_factory.mktemp("ex"), vectors)}


def serving_rows(rows: int, shift_dim: int | None = None, seed: int = 1) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    if shift_dim is not None:
        vectors[:, shift_dim] += 3.0
    return vectors


def test_a_skewed_dimension_is_recorded_by_its_feature_name(training, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    logged = serving_rows(400, shift_dim=4)
    write_log_file(log_dir, "a-000000", 1, list(logged[:250]))
    write_log_file(log_dir, "a-000001", 1, list(logged[250:]))
    statistics, anomalies = run_skew_check(tmp_path, training["examples"], log_dir)
    assert anomalies.get_int_custom_property("skew_over_threshold") == 1
    assert anomalies.get_string_custom_property("skew_feature") == "u5"  # dimension 4, 1-based
    assert anomalies.get_float_custom_property("skew_distance") > 0.5
    message = anomalies.get_string_custom_property("skew_message")
    assert "feature 'u5': jensen_shannon_divergence distance" in message and "u1'" not in message
    assert anomalies.get_int_custom_property("serving_rows") == 400
    assert anomalies.get_int_custom_property("training_rows") == 4000
    recorded = anomalies_pb2.Anomalies.FromString(
        (Path(anomalies.uri) / "Split-serving" / "SchemaDiff.pb").read_bytes()
    )
    assert set(recorded.anomaly_info) == {"u5"}
    served = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        (Path(statistics.uri) / "Split-serving" / "FeatureStats.pb").read_bytes()
    )
    assert served.datasets[0].num_examples == 400
    assert len(served.datasets[0].features) == DIM


def test_serving_like_training_records_no_skew(training, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    write_log_file(log_dir, "a-000000", 2, list(serving_rows(400)))
    _, anomalies = run_skew_check(tmp_path, training["examples"], log_dir)
    assert anomalies.get_int_custom_property("skew_over_threshold") == 0
    assert anomalies.get_float_custom_property("skew_distance") < 0.1
    assert not anomalies.get_string_custom_property("skew_message")


def test_an_empty_log_or_vectors_of_another_size_measure_nothing(training, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    write_log_file(log_dir, "a-000000", 1, list(np.ones((5, DIM + 1), np.float32)))
    _, anomalies = run_skew_check(tmp_path, training["examples"], log_dir)
    assert anomalies.get_int_custom_property("serving_rows") == 0
    assert anomalies.get_int_custom_property("skew_over_threshold") == 0


def test_a_bad_log_file_is_named(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "serving-x-v1.csv").write_text("u1,u2\n0.5,0.25\n0.1,nan\n")
    with pytest.raises(DataError, match=r"serving-x-v1.csv, line 3: NaN"):
        skew.read_serving_log(log_dir, 2)
    (log_dir / "serving-x-v1.csv").write_text("a,b\n0.5,0.25\n")
    with pytest.raises(DataError, match=r"serving-x-v1.csv, line 1: header is not u1..u2"):
        skew.read_serving_log(log_dir, 2)


def test_the_step_is_in_the_dag_only_with_a_serving_log(tmp_path):
    from pipeline.dag import create_pipeline

    train = tmp_path / "train.csv"
    train.write_text("")
    without = create_pipeline(
        PipelineConfig(output_dir=str(tmp_path / "a")), str(train), None, None
    )
    assert "SkewCheck" not in {c.id for c in without.components}
    config = PipelineConfig(output_dir=str(tmp_path / "b"), serving_log=str(tmp_path / "log"))
    with_log = create_pipeline(config, str(train), None, None)
    (check,) = [c for c in with_log.components if c.id == "SkewCheck"]
    assert check.inputs["examples"].producer_component_id == "RecipeCsvExampleGen"
    assert check.exec_properties["vector_js"] == config.skew_vector_js
    # the step gates nothing: no component waits on it
    assert not check.downstream_nodes


def test_the_runner_flag_takes_a_local_folder(tmp_path, monkeypatch, capsys):
    from pipeline.local_runner import parse_args

    monkeypatch.chdir(tmp_path)
    config = parse_args(["--output_dir", "out", "--serving_log", "logs"])
    assert config.serving_log == str(tmp_path / "logs")
    assert parse_args(["--output_dir", "out"]).serving_log is None
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", "out", "--serving_log", "gs://bucket/logs"])
    assert "--serving_log: a local folder" in capsys.readouterr().err


def test_the_log_is_read_newest_first_up_to_the_bound(tmp_path):
    rows = np.arange(12 * DIM, dtype=np.float32).reshape(12, DIM)
    for part in range(3):
        write_log_file(tmp_path, f"a-{part:06d}", 1, list(rows[4 * part : 4 * part + 4]))
    vectors, files = skew.read_serving_log(tmp_path, DIM, max_rows=6)
    np.testing.assert_array_equal(vectors, rows[6:])
    assert [Path(f).name for f in files] == [p.name for p in sorted(tmp_path.iterdir())[1:]]
    np.testing.assert_array_equal(skew.read_serving_log(tmp_path, DIM)[0], rows)


def test_the_message_names_the_largest_skews_and_counts_the_rest():
    over = [(f"u{j}", "JENSEN_SHANNON_DIVERGENCE", 0.2 + j / 100, 0.1) for j in range(1, 9)]
    message = skew.describe(over)
    assert message.startswith("feature 'u8': jensen_shannon_divergence distance 0.2800")
    assert "'u4'" in message and "'u3'" not in message
    assert message.endswith("; and 3 more dimension(s)")
