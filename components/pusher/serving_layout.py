"""TF Serving's layout for the two towers, written so that a version appears complete or not
at all:

    <serving_dir>/user_tower/<version>/{saved_model.pb, variables/,
                                        assets.extra/{finetower_push.json,
                                                     tf_serving_warmup_requests}}
    <serving_dir>/item_tower/<version>/...
    <serving_dir>/models.config       (model_config_list for --model_config_file, written by
                                       components/serving_config)

Versions are integers (TF Serving loads only numeric folders); one number for both towers.
A version is published with `components.common.publish.staged_dir`: under a hidden temporary
name renamed into place on a local disk; on object stores (gs://, s3://) the numbered folder
is written with `saved_model.pb` last, since TF Serving loads a version only once that file
exists.
"""

from __future__ import annotations

import json
import os
import uuid

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.common.errors import ArtifactError
from components.common.paths import absolute, copy_tree, is_remote, join, write_bytes
from components.common.publish import staged_dir
from components.pusher.warmup import write_warmup

TOWERS = ("user_tower", "item_tower")
MODELS_CONFIG = "models.config"
PUSH_INFO = os.path.join("assets.extra", "finetower_push.json")
SAVED_MODEL = "saved_model.pb"


def versions(model_dir: str) -> list[int]:
    """The numeric version folders under `model_dir`, ascending."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(model_dir))
    return sorted(int(n) for n in names if n.isdigit())


def read_push_info(version_dir: str) -> dict | None:
    path = os.path.join(version_dir, PUSH_INFO)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def pushed_version_of(serving_dir: str, model_uri: str) -> int | None:
    """The version already pushed from the model at `model_uri` (both towers present), if any."""
    for version in reversed(versions(os.path.join(serving_dir, TOWERS[0]))):
        info = read_push_info(os.path.join(serving_dir, TOWERS[0], str(version)))
        both = all(
            tf.io.gfile.exists(os.path.join(serving_dir, t, str(version), SAVED_MODEL))
            for t in TOWERS
        )
        if info and info.get("model_uri") == model_uri and both:
            return version
    return None


def next_version(serving_dir: str) -> int:
    """One more than the highest version of either tower (1 for an empty serving dir)."""
    found = [v for t in TOWERS for v in versions(os.path.join(serving_dir, t))]
    return max(found, default=0) + 1


def publish_version(
    tower_src: str, model_dir: str, version: int, info: dict, warmup_name: str | None = None
) -> str:
    """Copy one tower's SavedModel to `model_dir/<version>`, complete before it is visible
    (`saved_model.pb` last on an object store, where TF Serving waits for it); with
    `warmup_name` (the model's name in models.config) add TF Serving warm-up records."""
    final = join(model_dir, str(version))
    with staged_dir(final, last=SAVED_MODEL) as staging:
        copy_tree(tower_src, str(staging))
        if warmup_name:
            write_warmup(str(staging), warmup_name, source_dir=tower_src)
        write_bytes(str(staging / PUSH_INFO), json.dumps(info, indent=2, sort_keys=True).encode())
    return final


def tower_uri(serving_dir: str, tower: str, version: int) -> str:
    """The exact URI of one pushed tower version: `<serving_dir>/<tower>/<version>`."""
    return join(serving_dir, tower, str(int(version)))


def models_config(
    serving_dir: str,
    base_path_prefix: str | None = None,
    num_versions: int = 2,
    *,
    specific: list[int] | None = None,
    labels: dict[str, int] | None = None,
):
    """A ModelServerConfig serving both towers; `base_path_prefix` replaces `serving_dir` in
    the base paths (a container that mounts the folder elsewhere, e.g. /models).

    Without `specific`: the newest `num_versions` versions (`latest`). With it: exactly those
    versions (`specific { versions }`), and `labels` ({label: version}) on both towers.
    """
    root = base_path_prefix or absolute(serving_dir)
    config = model_server_config_pb2.ModelServerConfig()
    for tower in TOWERS:
        model = config.model_config_list.config.add()
        model.name = tower
        model.base_path = f"{root.rstrip('/')}/{tower}"
        model.model_platform = "tensorflow"
        if specific:
            model.model_version_policy.specific.versions.extend(sorted(set(specific)))
            for label, version in sorted((labels or {}).items()):
                model.version_labels[label] = version
        else:
            # the previous version stays loaded while a new one arrives, so a client can ask
            # for the user-tower version that matches the item embeddings it holds
            model.model_version_policy.latest.num_versions = num_versions
    return config


def write_config(serving_dir: str, config) -> str:
    """Write `models.config` so a polling model server reads the old file or the new one:
    a temporary sibling renamed over it locally; one direct write on an object store (where
    a write becomes visible whole and a rename is a copy)."""
    path = join(serving_dir, MODELS_CONFIG)
    text = text_format.MessageToString(config)
    if is_remote(serving_dir):
        write_bytes(path, text.encode())
        return path
    tf.io.gfile.makedirs(serving_dir)
    tmp = os.path.join(serving_dir, f".{MODELS_CONFIG}.{uuid.uuid4().hex[:8]}")
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path


def write_models_config(
    serving_dir: str, base_path_prefix: str | None = None, num_versions: int = 2
) -> str:
    """A `latest` models.config (tests and tools that serve whatever is there)."""
    return write_config(serving_dir, models_config(serving_dir, base_path_prefix, num_versions))


def read_config(serving_dir: str):
    """The ModelServerConfig in `serving_dir/models.config`, or None when there is none."""
    path = join(serving_dir, MODELS_CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ArtifactError(f"{path}: not a ModelServerConfig ({error})") from None
