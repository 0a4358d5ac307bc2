"""Trainer's `run_fn`: the recipe's training, then the three exports.

`custom_config` (from pipeline/configs.py): epochs, batch_size, learning_rate, patience,
seed, user_dim, item_dim. Reads the raw Examples and applies the transform graph in the
input pipeline (Transform does not materialize its output); shuffles with the seed.
"""

from __future__ import annotations

import json
import logging
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from components.example_gen.recipe_csv import ITEM_VECTOR, LABEL, USER_VECTOR  # noqa: E402
from components.trainer import distribute, export  # noqa: E402
from components.trainer.model import build_dssm, copy_weights_by_name  # noqa: E402

SHUFFLE_BUFFER = 100_000
PARSE_BATCH = 8192
MODEL_INFO = "finetower_model.json"
SUMMARY_FILE = "model_summary.txt"
PLOT_FILE = "model.png"


def input_dataset(
    files: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """One epoch of transformed `((user_vector, item_vector), label)` batches.

    Records are shuffled, then parsed and transformed `PARSE_BATCH` at a time and re-cut into
    `batch_size` batches: parsing and the transform graph cost per call, not per row, so at the
    recipe's batch of 128 this runs ~3x faster than transforming each training batch.
    """
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=max(batch_size, PARSE_BATCH),
        num_epochs=1,
        shuffle=shuffle,
        shuffle_buffer_size=SHUFFLE_BUFFER,
        shuffle_seed=seed,
        drop_final_batch=False,
    )
    raw_schema = tf_transform_output.raw_metadata.schema
    dataset = data_accessor.tf_dataset_factory(files, options, raw_schema)
    tft_layer = tf_transform_output.transform_features_layer()

    def to_model_inputs(raw):
        wanted = {k: raw[k] for k in (USER_VECTOR, ITEM_VECTOR)}
        features = tft_layer(wanted)
        label = tf.cast(tf.reshape(raw[LABEL], [-1, 1]), tf.float32)
        return (features[USER_VECTOR], features[ITEM_VECTOR]), label

    dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


def split_bytes(files: list[str]) -> int:
    return sum(tf.io.gfile.stat(f).length for pattern in files for f in tf.io.gfile.glob(pattern))


def load_in_memory(
    files: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    budget_bytes: int,
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray] | None:
    """The whole split, transformed, as arrays `((user_vectors, item_vectors), labels)` when
    its files fit in `budget_bytes` (the decoded floats take about as much as the serialized
    records); else None, and the split streams. A fine-tuning set of a data-poor placement
    usually fits: training then runs at a bare fit's speed, with Keras shuffling each epoch."""
    if budget_bytes <= 0 or split_bytes(files) > budget_bytes:
        return None
    parts: list[tuple] = []
    dataset = input_dataset(
        files, data_accessor, tf_transform_output, PARSE_BATCH, shuffle=False, seed=0
    )
    for (users, items), labels in dataset.as_numpy_iterator():
        parts.append((users, items, labels))
    if not parts:
        return None
    users, items, labels = (np.concatenate(column) for column in zip(*parts, strict=True))
    return (users, items), labels


class TrainingClock(keras.callbacks.Callback):
    """Seconds each epoch spends on training batches (validation excluded), and its steps.

    Counts the batches itself: tf_keras' `optimizer.iterations` runs one ahead in the first
    epoch over a data set of unknown length. Keeps the logs as tensors, so counting waits for
    no step's results."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.epoch_seconds: list[float] = []
        self.epoch_steps: list[int] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self.epoch_steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.epoch_steps[-1] += 1

    def _end_of_training_batches(self):
        if len(self.epoch_seconds) < len(self.epoch_steps):  # once an epoch
            self.epoch_seconds.append(time.perf_counter() - self._started)

    def on_test_begin(self, logs=None):  # validation starts: the epoch's training is over
        self._end_of_training_batches()

    def on_epoch_end(self, epoch, logs=None):  # without validation data
        self._end_of_training_batches()


def _write_summary_and_plot(model, model_uri: str) -> None:
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    tf.io.gfile.GFile(os.path.join(model_uri, SUMMARY_FILE), "w").write("\n".join(lines) + "\n")
    try:
        keras.utils.plot_model(
            model,
            to_file=os.path.join(model_uri, PLOT_FILE),
            show_shapes=True,
            show_layer_names=True,
        )
    except (ImportError, OSError) as error:  # pydot or graphviz's `dot` missing: no picture
        logging.warning("model plot skipped (%s); install graphviz for %s", error, PLOT_FILE)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = fn_args.custom_config or {}
    epochs = int(config.get("epochs", 2))
    batch_size = int(config.get("batch_size", 128))
    seed = int(config.get("seed", 0))
    user_dim, item_dim = int(config.get("user_dim", 128)), int(config.get("item_dim", 128))
    # first: a multi-worker strategy must exist before other TensorFlow work (distribute.py)
    strategy = distribute.strategy_for(config.get("distribution"))
    distribute.per_replica_batch(batch_size, strategy)  # batch_size is the global batch

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = input_dataset(
        fn_args.train_files,
        fn_args.data_accessor,
        tf_transform_output,
        batch_size,
        shuffle=True,
        seed=seed,
    )
    val = input_dataset(
        fn_args.eval_files,
        fn_args.data_accessor,
        tf_transform_output,
        4096,
        shuffle=False,
        seed=seed,
    )
    budget = int(float(config.get("train_in_memory_mb", 256)) * 2**20)
    single = config.get("distribution") in (None, "", "one_device")
    arrays = None
    if single:
        arrays = load_in_memory(
            fn_args.train_files, fn_args.data_accessor, tf_transform_output, budget
        )
    train_input = "memory" if arrays is not None else "stream"
    train = distribute.shard_by_files(train, fn_args.train_files, strategy)
    val = distribute.shard_by_files(val, fn_args.eval_files, strategy)
    with strategy.scope():
        model = build_dssm(user_dim, item_dim, float(config.get("learning_rate", 1e-3)))
    if fn_args.base_model:
        base = keras.models.load_model(fn_args.base_model, compile=False)
        copied = copy_weights_by_name(base, model)
        logging.info("fine-tuning from %s (layers %s)", fn_args.base_model, copied)

    # every worker saves (collectives), only the chief's copies are kept
    log_dir = distribute.worker_dir(fn_args.model_run_dir, strategy)
    model_uri = distribute.worker_dir(os.path.dirname(fn_args.serving_model_dir), strategy)
    clock = TrainingClock()
    callbacks = [
        clock,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(config.get("patience", 10)), restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"),
    ]
    if arrays is not None:  # the split fits the budget: Keras shuffles it every epoch
        (users, items), labels = arrays
        history = model.fit(
            [users, items],
            labels,
            batch_size=batch_size,
            shuffle=True,
            validation_data=val,
            epochs=epochs,
            callbacks=callbacks,
            verbose=2,
        )
        del users, items, labels, arrays
    else:
        history = model.fit(
            train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2
        )

    paths = export.export_all(
        model, tf_transform_output.transform_features_layer(), model_uri, user_dim, item_dim
    )
    _write_summary_and_plot(model, model_uri)
    info = {
        "user_dim": user_dim,
        "item_dim": item_dim,
        "parameters": int(model.count_params()),
        "normalize": config.get("normalize"),
        "seed": seed,
        "base_model": fn_args.base_model,
        "training_epoch_seconds": clock.epoch_seconds,
        "training_epoch_steps": clock.epoch_steps,
        "train_input": train_input,
        # the fastest epoch (the first also fills the shuffle buffer and traces the graph)
        "training_samples_per_second": max(
            (
                steps * batch_size / seconds
                for steps, seconds in zip(clock.epoch_steps, clock.epoch_seconds, strict=False)
            ),
            default=0.0,
        ),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "exports": {k: os.path.relpath(p, model_uri) for k, p in paths.items()},
    }
    with tf.io.gfile.GFile(os.path.join(model_uri, MODEL_INFO), "w") as f:
        json.dump(info, f, indent=2)
    distribute.discard_worker_dir(model_uri, strategy)
    distribute.discard_worker_dir(log_dir, strategy)
