"""Trainer's `run_fn`: the recipe's training, then the three exports.

Configuration is a `TrainerConfig` (pipeline/configs.py), passed as the Trainer's
custom_config. Reads the raw Examples and applies the transform graph in the input pipeline
(Transform does not materialize its output); shuffles with the seed. The steps, in order:
`training_inputs` (arrays in memory, or batches streamed from ExampleGen's files),
`build_model`, `fit`, `export.export_all`, `write_model_info`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx

from components.example_gen.recipe_csv import ITEM_VECTOR, LABEL, USER_VECTOR
from components.latest_blessed.warm_start import describe, resolve_base_model
from components.trainer import distribute, export
from components.trainer.model import build_dssm, copy_weights_by_name
from pipeline.configs import TrainerConfig

SHUFFLE_BUFFER = 100_000
PARSE_BATCH = 8192
COUNT_BATCH = 1 << 16  # records a step when counting a split (a per-record step is 8x slower)
MODEL_INFO = "finetower_model.json"
SUMMARY_FILE = "model_summary.txt"
PLOT_FILE = "model.png"
VAL_BATCH = 4096  # validation only predicts: a large batch costs fewer steps


def record_dataset(patterns: list[str]) -> tf.data.TFRecordDataset:
    """ExampleGen's TFRecord files of a split, in name order (gzipped when named `.gz`, as
    TFX's own readers tell)."""
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no Examples files match {patterns}")
    gzipped = {f.endswith(".gz") for f in files}
    if len(gzipped) > 1:
        raise ValueError(f"{patterns}: gzipped and plain TFRecord files in one split")
    compression = "GZIP" if gzipped.pop() else ""
    return tf.data.TFRecordDataset(files, compression_type=compression, buffer_size=8 << 20)


def input_dataset(
    files: list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """One epoch of transformed `((user_vector, item_vector), label)` batches.

    Records are shuffled (`SHUFFLE_BUFFER`, seeded, a new order each epoch), then parsed with
    `tf.io.parse_example` and transformed `PARSE_BATCH` at a time, in parallel, and re-cut into
    `batch_size` batches: parsing and the transform graph cost per call, not per row. Only the
    three features the model reads are parsed, with the raw schema's feature spec. (tfx-bsl's
    `TFExampleRecord.TensorFlowDataset`, which the Trainer's `data_accessor` gives, parsed
    the same records 3.5x slower here: 2.95 s against 0.86 s for 189,614 records on 2 cores;
    at the recipe's 4.7M lines that capped training at ~60k samples/s.)
    """
    wanted = (LABEL, USER_VECTOR, ITEM_VECTOR)
    spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items() if k in wanted}
    tft_layer = tf_transform_output.transform_features_layer()

    def to_model_inputs(records):
        raw = tf.io.parse_example(records, spec)
        features = tft_layer({k: raw[k] for k in (USER_VECTOR, ITEM_VECTOR)})
        label = tf.cast(tf.reshape(raw[LABEL], [-1, 1]), tf.float32)
        return (features[USER_VECTOR], features[ITEM_VECTOR]), label

    dataset = record_dataset(files)
    if shuffle:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(max(batch_size, PARSE_BATCH)).map(
        to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


def count_records(patterns: list[str]) -> int:
    """The records in a split's files: one pass of TensorFlow's reader, nothing parsed."""
    started = time.perf_counter()
    batches = record_dataset(patterns).batch(COUNT_BATCH)
    records = int(batches.reduce(np.int64(0), lambda n, b: n + tf.size(b, out_type=tf.int64)))
    logging.info(
        "%d records in %s (counted in %.1f s)", records, patterns, time.perf_counter() - started
    )
    return records


def with_known_length(dataset: tf.data.Dataset, records: int, batch_size: int):
    """`dataset` of `records` records in `batch_size` batches, its length told to Keras
    (which runs several batches a call only over a data set of known length) and checked by
    tf.data at the end of each pass."""
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-records // batch_size)))


def split_bytes(files: list[str]) -> int:
    return sum(tf.io.gfile.stat(f).length for pattern in files for f in tf.io.gfile.glob(pattern))


def load_in_memory(
    files: list[str],
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
    dataset = input_dataset(files, tf_transform_output, PARSE_BATCH, shuffle=False, seed=0)
    for (users, items), labels in dataset.as_numpy_iterator():
        parts.append((users, items, labels))
    if not parts:
        return None
    users, items, labels = (np.concatenate(column) for column in zip(*parts, strict=True))
    return (users, items), labels


class TrainingClock(keras.callbacks.Callback):
    """Seconds each epoch spends on training batches (validation excluded), and its steps.

    Counts the batches itself from Keras' batch index, which is called once a call into
    TensorFlow (`steps_per_execution` batches; tf_keras' `optimizer.iterations` runs one ahead
    in a first epoch over a data set of unknown length). Keeps the logs as tensors, so
    counting waits for no step's results."""

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
        self.epoch_steps[-1] = batch + 1  # the index of the call's last batch

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


@dataclasses.dataclass
class TrainingInputs:
    """What `fit` trains on: the train split as arrays (`arrays`, "memory") or as a dataset
    (`train`, "stream"); validation always streams."""

    source: str  # "memory" or "stream", recorded in finetower_model.json
    val: tf.data.Dataset
    train: tf.data.Dataset | None = None
    arrays: tuple[tuple[np.ndarray, np.ndarray], np.ndarray] | None = None


def training_inputs(
    fn_args: tfx.components.FnArgs,
    tf_transform_output: tft.TFTransformOutput,
    config: TrainerConfig,
    strategy: tf.distribute.Strategy,
) -> TrainingInputs:
    """The train split from memory when training on one device and its files fit
    `config.train_in_memory_mb`; otherwise streamed (sharded across workers by file). On one
    device the streamed splits are counted first (`count_records`, a pass of the reader: 0.65 s
    for 189,614 records here) so that Keras can run `steps_per_execution` batches a call."""
    val = input_dataset(
        fn_args.eval_files,
        tf_transform_output,
        VAL_BATCH,
        shuffle=False,
        seed=config.seed,
    )
    val = distribute.shard_by_files(val, fn_args.eval_files, strategy)
    if config.single_device:
        val = with_known_length(val, count_records(fn_args.eval_files), VAL_BATCH)
        budget = int(config.train_in_memory_mb * 2**20)
        arrays = load_in_memory(fn_args.train_files, tf_transform_output, budget)
        if arrays is not None:
            return TrainingInputs(source="memory", val=val, arrays=arrays)
    train = input_dataset(
        fn_args.train_files,
        tf_transform_output,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
    )
    if config.single_device:
        train = with_known_length(train, count_records(fn_args.train_files), config.batch_size)
    train = distribute.shard_by_files(train, fn_args.train_files, strategy)
    return TrainingInputs(source="stream", val=val, train=train)


def steps_per_execution(config: TrainerConfig) -> int:
    """`config.steps_per_execution` on one device; 1 under a multi-device strategy, whose
    distributed data sets Keras cannot count."""
    return config.steps_per_execution if config.single_device else 1


def build_model(
    config: TrainerConfig, strategy: tf.distribute.Strategy, base_model: str | None
) -> keras.Model:
    """The recipe's DSSM under the strategy; fine-tuning copies a base Model's weights. A base
    Model that a ServedModel step recorded as not found (open-source KFP's first run) leaves
    Keras' initialisation."""
    with strategy.scope():
        model = build_dssm(
            config.user_dim, config.item_dim, config.learning_rate, steps_per_execution(config)
        )
    base_model, served = resolve_base_model(base_model)
    if served is not None:
        logging.info("warm start: %s", describe(served))
    if base_model:
        base = keras.models.load_model(base_model, compile=False)
        copied = copy_weights_by_name(base, model)
        logging.info("fine-tuning from %s (layers %s)", base_model, copied)
    return model


WARM_START_DECISION = (
    "today's Transform statistics normalise the inputs (the exported model carries today's "
    "transform graph, so training and serving agree); the base model's layer weights are "
    "copied by name and fine-tuned under them. The base model's own statistics are not reused: "
    "the shift they would hide is measured instead (val metrics of the copied weights under "
    "today's statistics, before any step, against the base model's last recorded val metrics)"
)


def _base_val_metrics(base_model: str) -> dict:
    """The base model's last val metrics, from its finetower_model.json (beside Format-Serving),
    when it has one (an imported model may not)."""
    path = os.path.join(os.path.dirname(base_model.rstrip("/")), MODEL_INFO)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        history = json.load(f).get("history", {})
    return {k: v[-1] for k, v in history.items() if k.startswith("val_") and v}


def warm_start_record(model: keras.Model, inputs: TrainingInputs, base_model: str | None):
    """What finetower_model.json says of the warm start: None without a base model; the
    ServedModel record with `base_model` None when it found nothing served (trained from
    initialisation); else the decision and its measured effect (logged too), with the served
    version when a ServedModel step chose the base."""
    base_model, served = resolve_base_model(base_model)
    if not base_model:
        return None if served is None else {"base_model": None, "served_model": served}
    before = model.evaluate(inputs.val, return_dict=True, verbose=0)
    record = {
        "base_model": base_model,
        "decision": WARM_START_DECISION,
        "val_before_training": {f"val_{k}": float(v) for k, v in before.items()},
        "base_model_val": _base_val_metrics(base_model),
    }
    if served is not None:
        record["served_model"] = served
    logging.info(
        "warm start from %s: val AUC before training %.4f under today's statistics "
        "(the base model's own last val AUC: %s). %s",
        base_model,
        record["val_before_training"].get("val_auc", float("nan")),
        record["base_model_val"].get("val_auc", "not recorded"),
        WARM_START_DECISION,
    )
    return record


def fit(
    model: keras.Model,
    inputs: TrainingInputs,
    config: TrainerConfig,
    callbacks: list[keras.callbacks.Callback],
) -> keras.callbacks.History:
    """`model.fit` on arrays (Keras shuffles them every epoch, `config.batch_size` a batch)
    or on the streamed dataset (already batched and shuffled by `input_dataset`)."""
    common = dict(validation_data=inputs.val, epochs=config.epochs, callbacks=callbacks, verbose=2)
    if inputs.arrays is not None:
        (users, items), labels = inputs.arrays
        return model.fit(
            [users, items], labels, batch_size=config.batch_size, shuffle=True, **common
        )
    return model.fit(inputs.train, **common)


def training_callbacks(
    clock: TrainingClock, config: TrainerConfig, log_dir: str
) -> list[keras.callbacks.Callback]:
    return [
        clock,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"),
    ]


def model_info(
    model: keras.Model,
    config: TrainerConfig,
    base_model: str | None,
    train_input: str,
    clock: TrainingClock,
    history: keras.callbacks.History,
    exports: dict[str, str],
) -> dict:
    """What finetower_model.json records: sizes, seed, input path, timing, history, exports."""
    return {
        "user_dim": config.user_dim,
        "item_dim": config.item_dim,
        "parameters": int(model.count_params()),
        "normalize": config.normalize,
        "seed": config.seed,
        "base_model": base_model,
        "training_epoch_seconds": clock.epoch_seconds,
        "training_epoch_steps": clock.epoch_steps,
        "train_input": train_input,
        "steps_per_execution": steps_per_execution(config),
        # the fastest epoch (the first also fills the shuffle buffer and traces the graph)
        "training_samples_per_second": max(
            (
                steps * config.batch_size / seconds
                for steps, seconds in zip(clock.epoch_steps, clock.epoch_seconds, strict=False)
            ),
            default=0.0,
        ),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "exports": exports,
    }


def write_model_info(model_uri: str, info: dict) -> None:
    with tf.io.gfile.GFile(os.path.join(model_uri, MODEL_INFO), "w") as f:
        json.dump(info, f, indent=2)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train the recipe's DSSM on the transformed Examples and export it.

    Which input path runs: on one device (`distribution` one_device, the default) a train
    split whose files fit `train_in_memory_mb` is read once, transformed, into arrays, and
    `fit` shuffles them every epoch ("memory": a bare fit's speed); a larger split, or any
    tf.distribute strategy, streams shuffled batches from ExampleGen's files through the
    transform graph ("stream": memory flat as data grows). Validation always streams. The
    path taken is `train_input` in finetower_model.json.
    """
    config = TrainerConfig.from_custom_config(fn_args.custom_config)
    # first: a multi-worker strategy must exist before other TensorFlow work (distribute.py)
    strategy = distribute.strategy_for(config.distribution)
    distribute.check_global_batch(config.batch_size, strategy)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    inputs = training_inputs(fn_args, tf_transform_output, config, strategy)
    model = build_model(config, strategy, fn_args.base_model)
    warm_start = warm_start_record(model, inputs, fn_args.base_model)

    # every worker saves (collectives), only the chief's copies are kept
    log_dir = distribute.worker_dir(fn_args.model_run_dir, strategy)
    model_uri = distribute.worker_dir(os.path.dirname(fn_args.serving_model_dir), strategy)
    clock = TrainingClock()
    history = fit(model, inputs, config, training_callbacks(clock, config, log_dir))
    train_input = inputs.source
    del inputs  # the in-memory split is not needed for exporting

    paths = export.export_all(
        model,
        tf_transform_output.transform_features_layer(),
        model_uri,
        config.user_dim,
        config.item_dim,
    )
    _write_summary_and_plot(model, model_uri)
    exports = {k: os.path.relpath(p, model_uri) for k, p in paths.items()}
    info = model_info(model, config, fn_args.base_model, train_input, clock, history, exports)
    info["warm_start"] = warm_start
    write_model_info(model_uri, info)
    distribute.discard_worker_dir(model_uri, strategy)
    distribute.discard_worker_dir(log_dir, strategy)
