"""The record a ServedModel step writes into its Model, and how the Trainer reads it.

On open-source KFP a step cannot output "no artifact": the ServedModel step always outputs a
Model, and the Trainer always gets a `base_model` path. The record
(`finetower_served_model.json` at the Model's root, beside `Format-Serving/`) says whether that
Model holds the served model (`found` 1, with the version and the Model it was pushed from) or
is empty because nothing was pushed yet (`found` 0: the Trainer trains from initialisation).
An imported `--base_model` or a Model from ML Metadata has no record and is used as it is.
"""

from __future__ import annotations

import json

import tensorflow as tf

from components.common.paths import join, parent

RECORD_FILE = "finetower_served_model.json"


def found(serving_dir: str, version: int, model_uri: str) -> dict:
    """The record of a Model that holds `serving_dir`'s version `version`."""
    return {"found": 1, "serving_dir": serving_dir, "version": version, "model_uri": model_uri}


def not_found(serving_dir: str) -> dict:
    """The record of the empty Model output when nothing complete was pushed to `serving_dir`."""
    return {"found": 0, "serving_dir": serving_dir}


def describe(record: dict) -> str:
    """One line for the logs."""
    if record["found"]:
        return (
            f"the served model, version {record['version']} of {record['serving_dir']} "
            f"(pushed from {record['model_uri']})"
        )
    return f"nothing pushed to {record['serving_dir']} yet: training from initialisation"


def write_record(model_uri: str, record: dict) -> None:
    with tf.io.gfile.GFile(join(model_uri, RECORD_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def read_record(model_uri: str) -> dict | None:
    """The record at the root of the Model `model_uri`, None when it has none."""
    path = join(model_uri, RECORD_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def resolve_base_model(base_model: str | None) -> tuple[str | None, dict | None]:
    """(the path to load weights from or None, the ServedModel record or None) for the
    Trainer's `fn_args.base_model` (a Model's Format-Serving folder): None to load when the
    record says nothing was found."""
    if not base_model:
        return None, None
    record = read_record(parent(base_model))
    if record is not None and not record.get("found"):
        return None, record
    return base_model, record
