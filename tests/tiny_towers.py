"""Tiny real two-tower SavedModels for the Pusher/ServingConfig tests: each tower maps a float
[batch, 4] input (`user_vector` / `item_vector`) to `embedding = input * scale`, with `scale`
a variable, so versions with different scales answer differently."""

from __future__ import annotations

import zlib
from pathlib import Path

import tensorflow as tf
from tfx.types import standard_artifacts

from components.trainer.export import ITEM_TOWER_DIR, USER_TOWER_DIR

DIM = 4


class _Tower(tf.Module):
    def __init__(self, scale: float, input_name: str):
        super().__init__()
        self.scale = tf.Variable(scale, dtype=tf.float32)
        spec = tf.TensorSpec([None, DIM], tf.float32, name=input_name)
        self.serve = tf.function(lambda x: {"embedding": x * self.scale}, input_signature=[spec])


def save_tower(path: Path, scale: float, input_name: str) -> Path:
    tower = _Tower(scale, input_name)
    tf.saved_model.save(tower, str(path), signatures={"serving_default": tower.serve})
    return path


def tiny_model(root: Path, name: str = "model", scale: float = 1.0) -> standard_artifacts.Model:
    """A Model artifact as the Trainer writes it: `<uri>/{user,item}_tower` SavedModels."""
    model = standard_artifacts.Model()
    model.uri = str(root / name)
    model.id = zlib.crc32(name.encode()) % 1000  # the same id in every process
    save_tower(root / name / USER_TOWER_DIR, scale, "user_vector")
    save_tower(root / name / ITEM_TOWER_DIR, scale, "item_vector")
    return model
