"""The exported SavedModels, each with the transform graph inside (serving takes raw vectors).

Under the Trainer's Model artifact:
- `Format-Serving/` the full DSSM: `serving_default(examples: string [batch])` -> `probability
  [batch, 1]`, for Evaluator; Examples need only `user_vector` and `item_vector`;
- `user_tower/`: `serving_default(user_vector: float32 [batch, U])` -> `user_embedding [batch,
  64]`, `query [batch, 64]` (= user_embedding ⊙ w, the output layer's weights folded in) and
  `bias [batch, 1]` (the output layer's b), so sigmoid(query · item_embedding + bias) is the
  model's probability; `from_examples(examples)` the same from serialized Examples;
- `item_tower/`: `serving_default(item_vector: float32 [batch, I])` -> `item_embedding [batch,
  64]`; `from_examples(examples)` -> `item_embedding` and `item_id` (bytes, "" when absent).
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras as keras

from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR, USER_VECTOR
from components.trainer.model import ITEM_TOWER, OUTPUT, USER_TOWER

FULL_MODEL_DIR = "Format-Serving"
USER_TOWER_DIR = "user_tower"
ITEM_TOWER_DIR = "item_tower"
EXAMPLES_SIGNATURE = "from_examples"


def _vector_specs(user_dim: int, item_dim: int) -> dict[str, tf.io.FixedLenFeature]:
    return {
        USER_VECTOR: tf.io.FixedLenFeature([user_dim], tf.float32),
        ITEM_VECTOR: tf.io.FixedLenFeature([item_dim], tf.float32),
    }


def _examples_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None], tf.string, name="examples")


def export_full_model(model, tft_layer, path: str, user_dim: int, item_dim: int) -> None:
    """The DSSM on serialized Examples -> `probability`."""
    model.tft_layer = tft_layer
    specs = _vector_specs(user_dim, item_dim)

    @tf.function(input_signature=[_examples_spec()])
    def serve_examples(examples):
        raw = tf.io.parse_example(examples, specs)
        features = model.tft_layer(raw)
        return {"probability": model([features[USER_VECTOR], features[ITEM_VECTOR]])}

    model.save(path, save_format="tf", signatures={"serving_default": serve_examples})


def _tower(model, layer_name: str, input_name: str):
    layer = model.get_layer(layer_name)
    return keras.Model(model.get_layer(input_name).input, layer.output, name=layer_name)


def export_user_tower(model, tft_layer, path: str, user_dim: int) -> None:
    """The user side: raw user vectors -> user_embedding, query (folded), bias."""
    tower = _tower(model, USER_TOWER, USER_VECTOR)
    tower.tft_layer = tft_layer
    tower.output_layer = model.get_layer(OUTPUT)  # tracked: w and b are saved with the tower

    def embed(raw_user_vectors):
        features = tower.tft_layer({USER_VECTOR: raw_user_vectors})
        user_embedding = tower(features[USER_VECTOR])
        kernel, bias = tower.output_layer.kernel, tower.output_layer.bias
        batch = tf.shape(user_embedding)[0]
        return {
            "user_embedding": user_embedding,
            "query": user_embedding * tf.reshape(kernel, [1, -1]),
            "bias": tf.fill([batch, 1], bias[0]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, user_dim], tf.float32, name=USER_VECTOR)])
    def serve_vectors(user_vector):
        return embed(user_vector)

    spec = {USER_VECTOR: tf.io.FixedLenFeature([user_dim], tf.float32)}

    @tf.function(input_signature=[_examples_spec()])
    def serve_examples(examples):
        return embed(tf.io.parse_example(examples, spec)[USER_VECTOR])

    tower.save(
        path,
        save_format="tf",
        signatures={"serving_default": serve_vectors, EXAMPLES_SIGNATURE: serve_examples},
    )


def export_item_tower(model, tft_layer, path: str, item_dim: int) -> None:
    """The item side: raw item vectors -> item_embedding."""
    tower = _tower(model, ITEM_TOWER, ITEM_VECTOR)
    tower.tft_layer = tft_layer

    def embed(raw_item_vectors):
        features = tower.tft_layer({ITEM_VECTOR: raw_item_vectors})
        return tower(features[ITEM_VECTOR])

    @tf.function(input_signature=[tf.TensorSpec([None, item_dim], tf.float32, name=ITEM_VECTOR)])
    def serve_vectors(item_vector):
        return {"item_embedding": embed(item_vector)}

    spec = {
        ITEM_VECTOR: tf.io.FixedLenFeature([item_dim], tf.float32),
        ITEM_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }

    @tf.function(input_signature=[_examples_spec()])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, spec)
        return {"item_embedding": embed(parsed[ITEM_VECTOR]), ITEM_ID: parsed[ITEM_ID]}

    tower.save(
        path,
        save_format="tf",
        signatures={"serving_default": serve_vectors, EXAMPLES_SIGNATURE: serve_examples},
    )


def export_all(model, tft_layer, model_uri: str, user_dim: int, item_dim: int) -> dict[str, str]:
    """Write the full model and both towers under `model_uri`; return their paths."""
    paths = {
        "full": os.path.join(model_uri, FULL_MODEL_DIR),
        "user_tower": os.path.join(model_uri, USER_TOWER_DIR),
        "item_tower": os.path.join(model_uri, ITEM_TOWER_DIR),
    }
    export_user_tower(model, tft_layer, paths["user_tower"], user_dim)
    export_item_tower(model, tft_layer, paths["item_tower"], item_dim)
    export_full_model(model, tft_layer, paths["full"], user_dim, item_dim)
    return paths
