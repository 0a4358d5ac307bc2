"""The recipe's model: its size, the folded query, the recipe's own weight files."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from components.trainer.model import build_dssm, copy_weights_by_name, fold_output_weights


def test_the_recipe_has_16577_parameters_with_keras_defaults():
    model = build_dssm()
    assert model.count_params() == 16_577
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [64, 64, 1]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "sigmoid"]
    for d in dense:
        assert isinstance(d.kernel_initializer, keras.initializers.GlorotUniform)
        assert not d.bias.numpy().any()
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    assert model.loss == "binary_crossentropy"


def test_folded_query_gives_the_models_logit():
    keras.utils.set_random_seed(1)
    model = build_dssm(8, 6)
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(20, 8)), rng.normal(size=(20, 6))
    user_embedding = model.get_layer("user_tower")(users).numpy()
    item_embedding = model.get_layer("item_tower")(items).numpy()
    w, b = fold_output_weights(model)
    logits = np.sum((user_embedding * w) * item_embedding, axis=1) + b
    probability = model.predict([users, items], verbose=0)[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probability, atol=1e-6)


def recipe_model():
    """The recipe's script as published: default layer names, functional API."""
    user_input = keras.layers.Input(shape=(128,))
    item_input = keras.layers.Input(shape=(128,))
    user_dense = keras.layers.Dense(64, activation="relu")(user_input)
    item_dense = keras.layers.Dense(64, activation="relu")(item_input)
    merged = keras.layers.Multiply()([user_dense, item_dense])
    output = keras.layers.Dense(1, activation="sigmoid")(merged)
    return keras.models.Model(inputs=[user_input, item_input], outputs=output)


def test_weights_saved_by_the_recipe_load_into_our_model(tmp_path):
    keras.utils.set_random_seed(7)
    recipe = recipe_model()
    recipe.save_weights(tmp_path / "recipe.h5")
    ours = build_dssm()
    ours.load_weights(tmp_path / "recipe.h5")
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(16, 128)), rng.normal(size=(16, 128))]
    np.testing.assert_allclose(ours.predict(x, verbose=0), recipe.predict(x, verbose=0), atol=1e-7)


def test_copy_weights_by_name_and_refusals():
    keras.utils.set_random_seed(2)
    source, target = build_dssm(), build_dssm()
    copy_weights_by_name(source, target)
    for name in ("user_tower", "item_tower", "output"):
        for a, b in zip(
            source.get_layer(name).get_weights(), target.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="layer 'user_tower' has shapes"):
        copy_weights_by_name(build_dssm(64, 128), build_dssm())
    with pytest.raises(ValueError, match="no layer 'user_tower'"):
        copy_weights_by_name(recipe_model(), build_dssm())
