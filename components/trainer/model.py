"""The recipe's DSSM, layer for layer (Keras 2 via tf_keras).

    user_vector [batch, U] -> Dense(64, relu) "user_tower" -> user_embedding [batch, 64]
    item_vector [batch, I] -> Dense(64, relu) "item_tower" -> item_embedding [batch, 64]
    Multiply -> Dense(1, sigmoid) "output" -> probability [batch, 1]

16,577 parameters at 128/128. Keras' defaults: Glorot-uniform kernels, zero biases.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from components.common.vectors import VECTOR_DIM
from components.example_gen.recipe_csv import ITEM_VECTOR, USER_VECTOR

TOWER_UNITS = 64
USER_TOWER, ITEM_TOWER, OUTPUT = "user_tower", "item_tower", "output"
LAYER_NAMES = (USER_TOWER, ITEM_TOWER, OUTPUT)


def build_dssm(
    user_dim: int = VECTOR_DIM,
    item_dim: int = VECTOR_DIM,
    learning_rate: float = 1e-3,
    steps_per_execution: int = 1,
):
    """The recipe's model, compiled: Adam, binary cross-entropy, accuracy and AUC.
    `steps_per_execution` batches run in one call into TensorFlow: the same updates, one
    batch at a time, without a Python round trip per batch."""
    user_vector = keras.Input((user_dim,), name=USER_VECTOR)
    item_vector = keras.Input((item_dim,), name=ITEM_VECTOR)
    user = keras.layers.Dense(TOWER_UNITS, activation="relu", name=USER_TOWER)(user_vector)
    item = keras.layers.Dense(TOWER_UNITS, activation="relu", name=ITEM_TOWER)(item_vector)
    joined = keras.layers.Multiply(name="multiply")([user, item])
    probability = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT)(joined)
    model = keras.Model([user_vector, item_vector], probability, name="dssm")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
        steps_per_execution=steps_per_execution,
    )
    return model


def fold_output_weights(model) -> tuple[np.ndarray, float]:
    """(w [64], b): the output layer's weights, so that for u = user_embedding and
    v = item_embedding the model's logit is (u ⊙ w) · v + b, and the query u ⊙ w ranks items
    by an inner product exactly as the model scores them."""
    kernel, bias = model.get_layer(OUTPUT).get_weights()
    return kernel[:, 0], float(bias[0])


def copy_weights_by_name(source, target) -> list[str]:
    """Copy the DSSM's layers from `source` into `target` by layer name; return the names.

    Raises ValueError naming the layer whose weights are missing or of another shape."""
    for name in LAYER_NAMES:
        try:
            weights = source.get_layer(name).get_weights()
        except ValueError:
            raise ValueError(f"base model has no layer {name!r}") from None
        expected = [w.shape for w in target.get_layer(name).get_weights()]
        if [w.shape for w in weights] != expected:
            shapes = [w.shape for w in weights]
            raise ValueError(f"base model layer {name!r} has shapes {shapes}, not {expected}")
        target.get_layer(name).set_weights(weights)
    return list(LAYER_NAMES)
