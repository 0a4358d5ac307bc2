"""Import the Keras recipe's trained weights (`model.save_weights` HDF5) into a finetower run.

The recipe builds: user Input -> Dense(64, relu) = `dense`; item Input -> Dense(64, relu) =
`dense_1`; multiply; Dense(1, sigmoid) = `dense_2`. Keras stores a Dense kernel as
[in, out]; torch's Linear holds [out, in], so kernels are transposed on the way in.

Two file layouts are read:
- Keras 2 (`tf.keras`, `model.save_weights("w.h5")`; also `model.save("m.h5")`, whose weights
  sit under `model_weights`): root attrs `layer_names`, `backend`, `keras_version`; one group
  per layer with attr `weight_names` (e.g. `dense/kernel:0`), each weight a dataset at
  `<layer>/<weight name>`, so `dense/dense/kernel:0`.
- Keras 3 (`model.save_weights("w.weights.h5")`): `layers/<layer>/vars/0` (kernel) and
  `layers/<layer>/vars/1` (bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from finetower.artifacts import atomic_dir, file_sha256
from finetower.errors import ArtifactError
from finetower.model import ModelConfig, TwoTowerModel
from finetower.runs import save_run

# The recipe's layer names, by their role in the two-tower model.
RECIPE_LAYERS = {"user_tower": "dense", "item_tower": "dense_1", "output": "dense_2"}


@dataclass(frozen=True)
class DenseWeights:
    """One Keras Dense layer as stored: `kernel [in, out]`, `bias [out]`, and where each was."""

    kernel: np.ndarray
    bias: np.ndarray
    kernel_path: str
    bias_path: str


@dataclass(frozen=True)
class KerasWeights:
    """The three Dense layers of the recipe read from one file, with the file's metadata."""

    user: DenseWeights
    item: DenseWeights
    output: DenseWeights
    layout: str
    metadata: dict[str, str]


def _decode(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _string_list_attr(group: h5py.Group, name: str) -> list[str] | None:
    """A list-of-strings attribute; Keras splits long ones into `name0`, `name1`, ..."""
    if name in group.attrs:
        return [_decode(v) for v in np.atleast_1d(group.attrs[name])]
    if f"{name}0" not in group.attrs:
        return None
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_decode(v) for v in np.atleast_1d(group.attrs[f"{name}{chunk}"]))
        chunk += 1
    return values


def _read_array(h5_path: Path, node: Any, path: str, layer: str) -> np.ndarray:
    if not isinstance(node, h5py.Dataset):
        raise ArtifactError(
            f"{h5_path}: dataset '{path}' is missing (weights of Keras layer '{layer}')"
        )
    array = np.asarray(node[()], dtype=np.float32)
    if not np.isfinite(array).all():
        raise ArtifactError(f"{h5_path}: dataset '{path}' holds NaN or infinite values")
    return array


def _find_keras2_weight(group: h5py.Group, layer: str, suffix: str) -> str:
    """The name (relative to the layer's group) of its `kernel` or `bias` dataset."""
    names = _string_list_attr(group, "weight_names")
    if names is None:  # no attribute: look at the datasets themselves
        names = []

        def collect(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                names.append(name)

        group.visititems(collect)
    for name in names:
        if name.rsplit("/", 1)[-1] in (f"{suffix}:0", suffix):
            return name
    return f"{layer}/{suffix}:0"  # the name Keras 2 gives it, reported as missing


def _read_keras2_dense(h5_path: Path, root: h5py.Group, layer: str, prefix: str) -> DenseWeights:
    if not isinstance(root.get(layer), h5py.Group):
        present = ", ".join(_string_list_attr(root, "layer_names") or [])
        raise ArtifactError(
            f"{h5_path}: dataset '{prefix}{layer}/{layer}/kernel:0' is missing: the file has "
            f"no Keras layer '{layer}' (layers: {present or 'none'})"
        )
    group = root[layer]
    kernel_name = _find_keras2_weight(group, layer, "kernel")
    bias_name = _find_keras2_weight(group, layer, "bias")
    kernel_path, bias_path = f"{prefix}{layer}/{kernel_name}", f"{prefix}{layer}/{bias_name}"
    return DenseWeights(
        kernel=_read_array(h5_path, group.get(kernel_name), kernel_path, layer),
        bias=_read_array(h5_path, group.get(bias_name), bias_path, layer),
        kernel_path=kernel_path,
        bias_path=bias_path,
    )


def _read_keras3_dense(h5_path: Path, root: h5py.Group, layer: str) -> DenseWeights:
    base = f"layers/{layer}/vars"
    if base not in root:
        present = ", ".join(root["layers"]) if "layers" in root else "none"
        raise ArtifactError(
            f"{h5_path}: dataset '{base}/0' is missing: the file has no Keras layer "
            f"'{layer}' (layers: {present})"
        )
    kernel_path, bias_path = f"{base}/0", f"{base}/1"
    kernel = _read_array(h5_path, root.get(kernel_path), kernel_path, layer)
    bias = _read_array(h5_path, root.get(bias_path), bias_path, layer)
    return DenseWeights(kernel, bias, kernel_path, bias_path)


def read_keras_weights(
    h5_path: str | Path,
    user_layer: str = RECIPE_LAYERS["user_tower"],
    item_layer: str = RECIPE_LAYERS["item_tower"],
    output_layer: str = RECIPE_LAYERS["output"],
) -> KerasWeights:
    """Read the recipe's three Dense layers from a Keras 2 or Keras 3 weights file."""
    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise ArtifactError(f"{h5_path}: file not found")
    try:
        h5_file = h5py.File(h5_path, "r")
    except OSError as error:
        raise ArtifactError(f"{h5_path}: not an HDF5 file ({error})") from None
    with h5_file:
        root: h5py.Group = h5_file
        prefix = ""
        if "model_weights" in h5_file:  # a full `model.save("m.h5")` file
            root, prefix = h5_file["model_weights"], "model_weights/"
        metadata = {
            key: _decode(root.attrs[key])
            for key in ("keras_version", "backend")
            if key in root.attrs
        }
        if _string_list_attr(root, "layer_names") is not None:
            layout = "keras2-hdf5"
            layers = [
                _read_keras2_dense(h5_path, root, name, prefix)
                for name in (user_layer, item_layer, output_layer)
            ]
        elif "layers" in root:
            layout = "keras3-weights-h5"
            layers = [
                _read_keras3_dense(h5_path, root, name)
                for name in (user_layer, item_layer, output_layer)
            ]
        else:
            raise ArtifactError(
                f"{h5_path}: not a Keras weights file: no 'layer_names' attribute (Keras 2 "
                "save_weights) and no 'layers' group (Keras 3 .weights.h5)"
            )
    weights = KerasWeights(*layers, layout=layout, metadata=metadata)
    _check_shapes(h5_path, weights)
    return weights


def _shape_error(h5_path: Path, path: str, shape: tuple, expected: str) -> ArtifactError:
    return ArtifactError(f"{h5_path}: dataset '{path}' has shape {shape}, expected {expected}")


def _check_shapes(h5_path: Path, weights: KerasWeights) -> None:
    """Refuse weights that do not make the recipe's graph (towers of equal width, output 1)."""
    user, item, output = weights.user, weights.item, weights.output
    for dense in (user, item, output):
        if dense.kernel.ndim != 2 or 0 in dense.kernel.shape:
            raise _shape_error(h5_path, dense.kernel_path, dense.kernel.shape, "[in, out]")
    width = user.kernel.shape[1]
    if item.kernel.shape[1] != width:
        raise _shape_error(
            h5_path,
            item.kernel_path,
            item.kernel.shape,
            f"[in, {width}] (the item tower must be as wide as '{user.kernel_path}')",
        )
    if output.kernel.shape != (width, 1):
        raise _shape_error(
            h5_path, output.kernel_path, output.kernel.shape, f"[{width}, 1] (the output layer)"
        )
    for dense in (user, item, output):
        out = dense.kernel.shape[1]
        if dense.bias.shape != (out,):
            raise _shape_error(h5_path, dense.bias_path, dense.bias.shape, f"[{out}]")


def model_from_keras_weights(weights: KerasWeights) -> TwoTowerModel:
    """The TwoTowerModel (sizes read from the kernels) holding the Keras weights."""
    config = ModelConfig(
        user_dim=weights.user.kernel.shape[0],
        item_dim=weights.item.kernel.shape[0],
        tower=(weights.user.kernel.shape[1],),
    )
    model = TwoTowerModel(config)
    state = {
        "user_tower.0.weight": weights.user.kernel.T,
        "user_tower.0.bias": weights.user.bias,
        "item_tower.0.weight": weights.item.kernel.T,
        "item_tower.0.bias": weights.item.bias,
        "output.weight": weights.output.kernel.T,
        "output.bias": weights.output.bias,
    }
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model.eval()


def import_keras_weights(
    h5_path: str | Path,
    run_dir: str | Path,
    *,
    user_layer: str = RECIPE_LAYERS["user_tower"],
    item_layer: str = RECIPE_LAYERS["item_tower"],
    output_layer: str = RECIPE_LAYERS["output"],
    overwrite: bool = False,
) -> str:
    """Write the Keras recipe's weights as a finetower run in `run_dir`; return its fingerprint.

    The run directory appears whole or not at all. An existing non-empty `run_dir` is
    refused unless `overwrite`, so an import never silently replaces a trained run.
    """
    h5_path, run_dir = Path(h5_path), Path(run_dir)
    if not overwrite and run_dir.exists() and any(run_dir.iterdir()):
        raise ArtifactError(
            f"{run_dir} already exists and is not empty (pass overwrite to replace)"
        )
    weights = read_keras_weights(h5_path, user_layer, item_layer, output_layer)
    model = model_from_keras_weights(weights)
    imported_from = {
        "path": str(h5_path.resolve()),
        "sha256": file_sha256(h5_path),
        "layout": weights.layout,
        "layers": {"user_tower": user_layer, "item_tower": item_layer, "output": output_layer},
        **weights.metadata,
    }
    with atomic_dir(run_dir) as tmp:
        fingerprint = save_run(tmp, model, extra={"imported_from": imported_from})
    return fingerprint
