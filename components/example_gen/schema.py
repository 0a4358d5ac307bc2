"""The schema of the recipe's Examples, made from the configured vector sizes.

`schema/schema.pbtxt` is this schema for the recipe's sizes (128/128), checked in; a test
keeps the two equal. Id fields are optional, so inputs that add `user_id`/`item_id` (the
sample builder's) are not anomalies.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.common.paths import is_remote
from components.common.vectors import VECTOR_DIM
from components.example_gen.recipe_csv import ITEM_ID, ITEM_VECTOR, LABEL, USER_ID, USER_VECTOR

CHECKED_IN = Path(__file__).resolve().parents[2] / "schema" / "schema.pbtxt"


def recipe_schema(user_dim: int = VECTOR_DIM, item_dim: int = VECTOR_DIM) -> schema_pb2.Schema:
    """label INT in {0, 1}; user_vector / item_vector FLOAT of fixed length; ids optional."""
    schema = schema_pb2.Schema()
    label = schema.feature.add(name=LABEL, type=schema_pb2.INT)
    label.int_domain.min, label.int_domain.max, label.int_domain.is_categorical = 0, 1, True
    label.presence.min_fraction = 1.0
    label.shape.dim.add(size=1)
    for name, dim in ((USER_VECTOR, user_dim), (ITEM_VECTOR, item_dim)):
        feature = schema.feature.add(name=name, type=schema_pb2.FLOAT)
        feature.presence.min_fraction = 1.0
        feature.shape.dim.add(size=dim)
    for name in (ITEM_ID, USER_ID):
        feature = schema.feature.add(name=name, type=schema_pb2.BYTES)
        feature.presence.min_fraction = 0.0
        feature.value_count.min, feature.value_count.max = 1, 1
    return schema


def schema_text(user_dim: int = VECTOR_DIM, item_dim: int = VECTOR_DIM) -> str:
    return text_format.MessageToString(recipe_schema(user_dim, item_dim))


def schema_file_for(user_dim: int, item_dim: int, output_dir: str | Path) -> Path | str:
    """The checked-in schema for the recipe's sizes; for other sizes, one written (once) under
    `output_dir/schema/` from the same function (object stores through tf.io.gfile)."""
    if (user_dim, item_dim) == (VECTOR_DIM, VECTOR_DIM):
        return CHECKED_IN
    text = schema_text(user_dim, item_dim)
    name = f"schema_{user_dim}x{item_dim}.pbtxt"
    if is_remote(output_dir):
        import tensorflow as tf

        path = f"{str(output_dir).rstrip('/')}/schema/{name}"
        if not tf.io.gfile.exists(path):
            tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
            with tf.io.gfile.GFile(path, "w") as f:  # object stores: a write is atomic
                f.write(text)
        return path
    path = Path(output_dir) / "schema" / name
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
