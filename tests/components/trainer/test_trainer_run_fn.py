"""run_fn on hand-built artifacts: ExampleGen's real output, a real transform graph."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx.components.util import tfxio_utils
from tfx.proto import example_gen_pb2

from components.trainer import training
from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv
from tests.components.example_gen.test_example_gen import run_executor
from tests.tft_helpers import analyze

DIM = 16


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    labels, users, items, _ = demo_samples(
        DemoData(rows=1500, items=100, user_dim=DIM, item_dim=DIM)
    )
    (root / "input").mkdir()
    write_recipe_csv(root / "input" / "train.csv", labels[:1200], users[:1200], items[:1200])
    write_recipe_csv(root / "input" / "eval.csv", labels[1200:], users[1200:], items[1200:])
    inputs = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name="train", pattern="train.csv"),
            example_gen_pb2.Input.Split(name="eval", pattern="eval.csv"),
        ]
    )
    examples = run_executor(root, inputs, example_gen_pb2.Output(), DIM, DIM)
    transform_output, _ = analyze(root, labels[:1200], users[:1200], items[:1200])
    return {
        "root": root,
        "examples": examples,
        "transform": transform_output,
        "users": users,
        "items": items,
    }


def fn_args(artifacts, out: Path, **config) -> FnArgs:
    examples = artifacts["examples"]
    split = lambda name: [os.path.join(examples.uri, f"Split-{name}", "*")]  # noqa: E731
    return FnArgs(
        train_files=split("train"),
        eval_files=split("eval"),
        transform_output=str(artifacts["root"] / "transform"),
        serving_model_dir=str(out / "model" / "Format-Serving"),
        model_run_dir=str(out / "model_run"),
        data_accessor=DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
            record_batch_factory=None,
            data_view_decode_fn=None,
        ),
        custom_config={
            "epochs": 2,
            "batch_size": 64,
            "seed": 3,
            "user_dim": DIM,
            "item_dim": DIM,
            **config,
        },
    )


def dense_weights(model_dir: Path) -> list[np.ndarray]:
    loaded = tf.saved_model.load(str(model_dir / "Format-Serving"))
    return [
        v.numpy()
        for v in sorted(loaded.variables, key=lambda v: v.name)
        if "tower" in v.name or "output" in v.name
    ]


@pytest.mark.parametrize("train_input, budget_mb", [("memory", 512), ("stream", 0)])
def test_same_seed_same_model_and_everything_written(artifacts, tmp_path, train_input, budget_mb):
    training.run_fn(fn_args(artifacts, tmp_path / "a", train_in_memory_mb=budget_mb))
    training.run_fn(fn_args(artifacts, tmp_path / "b", train_in_memory_mb=budget_mb))
    a, b = dense_weights(tmp_path / "a" / "model"), dense_weights(tmp_path / "b" / "model")
    assert len(a) == 6
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    model = tmp_path / "a" / "model"
    for name in ("Format-Serving", "user_tower", "item_tower"):
        assert (model / name / "saved_model.pb").is_file()
    info = json.loads((model / training.MODEL_INFO).read_text())
    assert info["parameters"] == 64 * (DIM + 1) * 2 + 65
    assert len(info["history"]["val_loss"]) == 2
    assert info["history"]["loss"][1] < info["history"]["loss"][0]
    assert info["train_input"] == train_input
    steps = info["training_epoch_steps"]  # every epoch sees the whole train split once
    assert steps == [-(-1200 // 64)] * 2
    assert info["training_samples_per_second"] > 0
    assert "Total params" in (model / training.SUMMARY_FILE).read_text()
    assert tf.io.gfile.glob(str(tmp_path / "a" / "model_run" / "**" / "events.out.tfevents.*"))


def test_another_seed_another_model(artifacts, tmp_path):
    training.run_fn(fn_args(artifacts, tmp_path / "a", epochs=1))
    training.run_fn(fn_args(artifacts, tmp_path / "b", epochs=1, seed=4))
    a, b = dense_weights(tmp_path / "a" / "model"), dense_weights(tmp_path / "b" / "model")
    assert not np.array_equal(a[0], b[0])


def test_fine_tuning_starts_from_the_base_models_weights(artifacts, tmp_path):
    training.run_fn(fn_args(artifacts, tmp_path / "base", epochs=1, seed=11))
    base = tmp_path / "base" / "model" / "Format-Serving"
    args = fn_args(artifacts, tmp_path / "tuned", epochs=1, learning_rate=0.0)
    args.base_model = str(base)
    training.run_fn(args)  # a zero learning rate: the exported model is the base model
    for x, y in zip(
        dense_weights(tmp_path / "base" / "model"),
        dense_weights(tmp_path / "tuned" / "model"),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)


def test_the_stream_reads_every_record_once_an_epoch_in_a_seeded_order(artifacts):
    import tensorflow_transform as tft

    examples = artifacts["examples"]
    files = [os.path.join(examples.uri, "Split-train", "*")]
    output = tft.TFTransformOutput(str(artifacts["root"] / "transform"))

    def epochs(seed):
        dataset = training.input_dataset(files, output, 64, shuffle=True, seed=seed)
        return [np.concatenate([u for (u, _), _ in dataset.as_numpy_iterator()]) for _ in "ab"]

    (plain, _), _ = training.load_in_memory(files, output, 1 << 30)
    first, second = epochs(3)
    assert len(first) == len(second) == len(plain) == 1200
    by_rows = lambda a: np.unique(a.round(5), axis=0)  # noqa: E731
    np.testing.assert_array_equal(by_rows(first), by_rows(plain))  # every record, once
    np.testing.assert_array_equal(by_rows(second), by_rows(plain))
    assert not np.array_equal(first, second)  # a new order each epoch
    again = epochs(3)
    np.testing.assert_array_equal(again[0], first)  # the same seed, the same orders
    np.testing.assert_array_equal(again[1], second)
    assert not np.array_equal(epochs(4)[0], first)


def test_gzipped_records_are_read_and_a_mixed_split_is_refused(artifacts, tmp_path):
    examples = artifacts["examples"]
    plain = [os.path.join(examples.uri, "Split-train", "*")]
    records = list(training.record_dataset(plain).as_numpy_iterator())
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(tmp_path / "data-00000.gz"), options) as writer:
        for record in records:
            writer.write(record)
    gzipped = list(training.record_dataset([str(tmp_path / "*.gz")]).as_numpy_iterator())
    assert gzipped == records
    (tmp_path / "data-00001.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match="gzipped and plain"):
        training.record_dataset([str(tmp_path / "*")])
    with pytest.raises(ValueError, match="no Examples files match"):
        training.record_dataset([str(tmp_path / "nothing-*")])


@pytest.mark.parametrize("train_input, budget_mb", [("memory", 512), ("stream", 0)])
def test_several_batches_a_call_train_the_same_model(artifacts, tmp_path, train_input, budget_mb):
    # 7 does not divide the 19 batches of an epoch: the last call of each epoch is cut short
    for name, steps in (("one", 1), ("seven", 7)):
        config = dict(train_in_memory_mb=budget_mb, steps_per_execution=steps)
        training.run_fn(fn_args(artifacts, tmp_path / name, **config))
    one, seven = (dense_weights(tmp_path / name / "model") for name in ("one", "seven"))
    for x, y in zip(one, seven, strict=True):
        np.testing.assert_array_equal(x, y)
    info = json.loads((tmp_path / "seven" / "model" / training.MODEL_INFO).read_text())
    assert info["steps_per_execution"] == 7 and info["train_input"] == train_input
    assert info["training_epoch_steps"] == [-(-1200 // 64)] * 2
    history = json.loads((tmp_path / "one" / "model" / training.MODEL_INFO).read_text())["history"]
    assert info["history"] == history


def test_a_split_is_counted_and_a_wrong_count_fails_the_pass(artifacts):
    import tensorflow_transform as tft

    files = [os.path.join(artifacts["examples"].uri, "Split-train", "*")]
    assert training.count_records(files) == 1200
    output = tft.TFTransformOutput(str(artifacts["root"] / "transform"))
    dataset = training.input_dataset(files, output, 64, shuffle=False, seed=0)
    told = training.with_known_length(dataset, 1200, 64)
    assert told.cardinality().numpy() == 19 and sum(1 for _ in told) == 19
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 21 elements"):
        sum(1 for _ in training.with_known_length(dataset, 1300, 64))
