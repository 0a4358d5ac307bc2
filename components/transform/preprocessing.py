"""`preprocessing_fn` for TFX Transform: normalize the pretrained vectors.

Modes (`TransformConfig.normalize` in pipeline/configs.py, passed as Transform's custom_config):
- `zscore` (default): per-dimension z-score, `(x - mean_d) / std_d`, with elementwise
  statistics over the training split (not one mean over the whole [batch, dim] tensor);
- `l2`: each vector divided by its L2 norm (no statistics);
- `none`: the raw vectors.
The label passes through; ids are not model inputs. The graph travels inside every exported
model, so serving takes the raw pretrained vectors.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from components.example_gen.recipe_csv import ITEM_VECTOR, LABEL, USER_VECTOR
from pipeline.configs import TransformConfig

NORMALIZE_MODES = ("zscore", "l2", "none")


def normalize(x: tf.Tensor, mode: str) -> tf.Tensor:
    """`x [batch, dim]` normalized by `mode` (one of NORMALIZE_MODES)."""
    if mode == "zscore":
        return tft.scale_to_z_score(x, elementwise=True)
    if mode == "l2":
        return tf.math.l2_normalize(x, axis=-1)
    if mode == "none":
        return tf.identity(x)
    raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, not {mode!r}")


def preprocessing_fn(inputs: dict[str, tf.Tensor], custom_config: dict[str, Any]) -> dict:
    mode = TransformConfig.from_custom_config(custom_config).normalize
    outputs = {
        USER_VECTOR: normalize(inputs[USER_VECTOR], mode),
        ITEM_VECTOR: normalize(inputs[ITEM_VECTOR], mode),
    }
    if LABEL in inputs:
        outputs[LABEL] = inputs[LABEL]
    return outputs
