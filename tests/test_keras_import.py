"""Importing the Keras recipe's `save_weights` HDF5 file into a finetower run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import finetower.cli.model_tools  # noqa: F401  (registers the commands)
from finetower.cli.app import app
from finetower.errors import ArtifactError
from finetower.keras_import import import_keras_weights
from finetower.runs import load_run, run_fingerprint

Layers = dict[str, tuple[np.ndarray, np.ndarray]]


def recipe_weights(rng: np.random.Generator, user_dim=128, item_dim=128, width=64) -> Layers:
    """Random weights in Keras' own layout: kernels [in, out], biases [out]."""

    def dense(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        limit = np.sqrt(6.0 / (n_in + n_out))  # Glorot-uniform, as Keras initialises
        kernel = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32)
        return kernel, rng.normal(0.0, 0.1, size=n_out).astype(np.float32)

    return {
        "dense": dense(user_dim, width),
        "dense_1": dense(item_dim, width),
        "dense_2": dense(width, 1),
    }


def write_keras2(path: Path, layers: Layers, under: str | None = None) -> None:
    """What Keras 2 `model.save_weights("w.h5")` writes (`under="model_weights"`: `model.save`).

    Every layer of the functional model is listed, weightless ones with empty `weight_names`;
    a weight named `dense/kernel:0` becomes the dataset `dense/dense/kernel:0`.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group(under) if under else f
        order = ["input_1", "input_2", "dense", "dense_1", "multiply", "dense_2"]
        root.attrs["layer_names"] = [name.encode("utf8") for name in order]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.13.1"
        for name in order:
            group = root.create_group(name)
            weights = {}
            if name in layers:
                kernel, bias = layers[name]
                weights = {f"{name}/kernel:0": kernel, f"{name}/bias:0": bias}
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in weights], dtype="S")
            for weight_name, value in weights.items():
                group.create_dataset(weight_name, data=value)


def write_keras3(path: Path, layers: Layers) -> None:
    """What Keras 3 `model.save_weights("w.weights.h5")` writes: `layers/<name>/vars/<i>`."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for name in ["input_layer", "input_layer_1", "multiply"]:
            f.create_group(f"layers/{name}/vars")
        for name, (kernel, bias) in layers.items():
            group = f.create_group(f"layers/{name}/vars")
            group.create_dataset("0", data=kernel)
            group.create_dataset("1", data=bias)


def recipe_probabilities(layers: Layers, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The recipe in numpy, float64: sigmoid((relu(u K0 + b0) * relu(i K1 + b1)) K2 + b2)."""
    k0, b0 = (a.astype(np.float64) for a in layers["dense"])
    k1, b1 = (a.astype(np.float64) for a in layers["dense_1"])
    k2, b2 = (a.astype(np.float64) for a in layers["dense_2"])
    user_side = np.maximum(users @ k0 + b0, 0.0)
    item_side = np.maximum(items @ k1 + b1, 0.0)
    logits = (user_side * item_side) @ k2 + b2
    return 1.0 / (1.0 + np.exp(-logits[:, 0]))


def torch_probabilities(run_dir: Path, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    model = load_run(run_dir)
    with torch.no_grad():
        probabilities = model.predict_proba(
            torch.from_numpy(users.astype(np.float32)), torch.from_numpy(items.astype(np.float32))
        )
    return probabilities.numpy().astype(np.float64)


WRITERS: dict[str, Callable[[Path, Layers], None]] = {
    "keras2": write_keras2,
    "keras2-full-model": lambda path, layers: write_keras2(path, layers, under="model_weights"),
    "keras3": write_keras3,
}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_imported_run_predicts_what_the_keras_recipe_computes(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(7)
    layers = recipe_weights(rng)
    weights_file = tmp_path / "recipe.h5"
    WRITERS[layout](weights_file, layers)
    # Inputs of the recipe's scale (pretrained vectors in about [-1, 1]).
    users = rng.uniform(-1.0, 1.0, size=(256, 128)).astype(np.float32)
    items = rng.uniform(-1.0, 1.0, size=(256, 128)).astype(np.float32)

    fingerprint = import_keras_weights(weights_file, tmp_path / "run")

    expected = recipe_probabilities(layers, users, items)
    assert expected.std() > 0.05  # the check below compares something that varies
    np.testing.assert_allclose(
        torch_probabilities(tmp_path / "run", users, items), expected, rtol=0, atol=1e-6
    )
    assert run_fingerprint(tmp_path / "run") == fingerprint
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["parameters"] == 16_577
    assert config["model"]["tower"] == [64]
    assert config["imported_from"]["layout"].startswith(layout[:6])
    assert config["imported_from"]["layers"]["item_tower"] == "dense_1"


def test_sizes_are_read_from_the_kernels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    layers = recipe_weights(rng, user_dim=24, item_dim=10, width=6)
    write_keras2(tmp_path / "small.h5", layers)

    import_keras_weights(tmp_path / "small.h5", tmp_path / "run")

    model = load_run(tmp_path / "run")
    assert (model.config.user_dim, model.config.item_dim, model.config.tower) == (24, 10, (6,))
    # Keras kernel [in, out] is torch weight [out, in]: the user tower's weight is K0 transposed.
    np.testing.assert_array_equal(model.user_tower[0].weight.detach().numpy(), layers["dense"][0].T)
    users, items = rng.normal(size=(9, 24)), rng.normal(size=(9, 10))
    np.testing.assert_allclose(
        torch_probabilities(tmp_path / "run", users, items),
        recipe_probabilities(layers, users, items),
        atol=1e-6,
    )


def test_a_missing_layer_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    layers = recipe_weights(np.random.default_rng(0))
    del layers["dense_1"]
    write_keras2(tmp_path / "partial.h5", layers)

    with pytest.raises(ArtifactError) as error:
        import_keras_weights(tmp_path / "partial.h5", tmp_path / "run")

    assert "partial.h5" in str(error.value)
    assert "dense_1/dense_1/kernel:0" in str(error.value)
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["partial.h5"]  # no temporary left behind


def test_layers_named_otherwise_are_chosen_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    layers = recipe_weights(rng, user_dim=12, item_dim=12, width=4)
    renamed = dict(zip(["user_dense", "item_dense", "click"], layers.values(), strict=True))
    write_keras3(tmp_path / "w.weights.h5", renamed)

    with pytest.raises(ArtifactError, match="'layers/dense/vars/0' is missing") as error:
        import_keras_weights(tmp_path / "w.weights.h5", tmp_path / "run")
    assert "user_dense" in str(error.value)  # the message lists the layers that are there

    import_keras_weights(
        tmp_path / "w.weights.h5",
        tmp_path / "run",
        user_layer="user_dense",
        item_layer="item_dense",
        output_layer="click",
    )
    users, items = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
    np.testing.assert_allclose(
        torch_probabilities(tmp_path / "run", users, items),
        recipe_probabilities(layers, users, items),
        atol=1e-6,
    )


def test_a_missing_bias_is_named(tmp_path: Path) -> None:
    write_keras2(tmp_path / "w.h5", recipe_weights(np.random.default_rng(0)))
    with h5py.File(tmp_path / "w.h5", "a") as f:
        del f["dense_2/dense_2/bias:0"]

    with pytest.raises(ArtifactError, match=r"w\.h5: dataset 'dense_2/dense_2/bias:0' is missing"):
        import_keras_weights(tmp_path / "w.h5", tmp_path / "run")


@pytest.mark.parametrize(
    ("layer", "which", "shape", "named"),
    [
        ("dense_2", 0, (64, 2), "dense_2/dense_2/kernel:0"),  # output must be [width, 1]
        ("dense_1", 0, (128, 32), "dense_1/dense_1/kernel:0"),  # towers of unequal width
        ("dense", 1, (65,), "dense/dense/bias:0"),  # bias does not match the kernel
    ],
)
def test_a_mis_shaped_dataset_is_named(
    tmp_path: Path, layer: str, which: int, shape: tuple, named: str
) -> None:
    layers = recipe_weights(np.random.default_rng(0))
    replaced = list(layers[layer])
    replaced[which] = np.zeros(shape, dtype=np.float32)
    layers[layer] = (replaced[0], replaced[1])
    write_keras2(tmp_path / "w.h5", layers)

    with pytest.raises(ArtifactError) as error:
        import_keras_weights(tmp_path / "w.h5", tmp_path / "run")

    message = str(error.value)
    assert "w.h5" in message and named in message and str(shape) in message
    assert not (tmp_path / "run").exists()


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    layers = recipe_weights(np.random.default_rng(0))
    layers["dense"][1][5] = np.nan
    write_keras2(tmp_path / "w.h5", layers)

    with pytest.raises(ArtifactError, match="dense/dense/bias:0' holds NaN"):
        import_keras_weights(tmp_path / "w.h5", tmp_path / "run")


def test_files_that_are_not_keras_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.h5").write_text("not hdf5\n")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))

    with pytest.raises(ArtifactError, match="text.h5: not an HDF5 file"):
        import_keras_weights(tmp_path / "text.h5", tmp_path / "run")
    with pytest.raises(ArtifactError, match="other.h5: not a Keras weights file"):
        import_keras_weights(tmp_path / "other.h5", tmp_path / "run")
    with pytest.raises(ArtifactError, match="absent.h5: file not found"):
        import_keras_weights(tmp_path / "absent.h5", tmp_path / "run")


def test_an_existing_run_is_replaced_only_when_asked(tmp_path: Path) -> None:
    write_keras2(tmp_path / "a.h5", recipe_weights(np.random.default_rng(1)))
    write_keras2(tmp_path / "b.h5", recipe_weights(np.random.default_rng(2)))
    first = import_keras_weights(tmp_path / "a.h5", tmp_path / "run")

    with pytest.raises(ArtifactError, match="already exists"):
        import_keras_weights(tmp_path / "b.h5", tmp_path / "run")
    assert run_fingerprint(tmp_path / "run") == first

    second = import_keras_weights(tmp_path / "b.h5", tmp_path / "run", overwrite=True)
    assert second != first
    assert run_fingerprint(tmp_path / "run") == second


def test_import_keras_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative names: the error console wraps long lines, and a long temporary path with them.
    monkeypatch.chdir(tmp_path)
    write_keras2(Path("w.h5"), recipe_weights(np.random.default_rng(5)))
    runner = CliRunner()

    result = runner.invoke(app, ["import-keras", "w.h5", "--out", "run", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fingerprint"] == run_fingerprint("run")

    failed = runner.invoke(app, ["import-keras", "missing.h5", "--out", "other"])
    assert failed.exit_code == 2
    assert "missing.h5: file not found" in failed.output
    assert not Path("other").exists()
