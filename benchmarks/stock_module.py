"""Module file of the stock TFX pipeline the benchmark compares against: CsvExampleGen's 257
scalar columns (names from a header line), stacked into the two vectors and z-scored by
Transform, the same recipe trained by a plain run_fn."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx_bsl.public import tfxio

from components.trainer.model import build_dssm

DIM = 128


def header(dim: int = DIM) -> str:
    return ",".join(["label"] + [f"u{j}" for j in range(dim)] + [f"i{j}" for j in range(dim)])


def preprocessing_fn(inputs):
    users = tf.concat([tf.reshape(inputs[f"u{j}"], [-1, 1]) for j in range(DIM)], axis=1)
    items = tf.concat([tf.reshape(inputs[f"i{j}"], [-1, 1]) for j in range(DIM)], axis=1)
    return {
        "user_vector": tft.scale_to_z_score(tf.cast(users, tf.float32), elementwise=True),
        "item_vector": tft.scale_to_z_score(tf.cast(items, tf.float32), elementwise=True),
        "label": inputs["label"],
    }


def _dataset(files, data_accessor, transform_output, batch_size):
    dataset = data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=True),
        transform_output.transformed_metadata.schema,
    )
    return dataset.map(
        lambda f: (
            (f["user_vector"], f["item_vector"]),
            tf.cast(tf.reshape(f["label"], [-1, 1]), tf.float32),
        )
    )


def run_fn(fn_args):
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = _dataset(fn_args.train_files, fn_args.data_accessor, transform_output, 128)
    val = _dataset(fn_args.eval_files, fn_args.data_accessor, transform_output, 4096)
    model = build_dssm()
    model.fit(
        train,
        validation_data=val,
        epochs=2,
        verbose=2,
        callbacks=[keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)],
    )
    tft_layer = transform_output.transform_features_layer()
    model.tft_layer = tft_layer
    raw_spec = transform_output.raw_feature_spec()
    raw_spec.pop("label")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        features = model.tft_layer(tf.io.parse_example(examples, raw_spec))
        return {"probability": model([features["user_vector"], features["item_vector"]])}

    model.save(fn_args.serving_model_dir, save_format="tf", signatures={"serving_default": serve})
