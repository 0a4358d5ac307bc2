"""What names a version besides models.config: Redis (`current` and the other kept store
versions, when a redis_url is configured) and an operator's rollback pin
(`<serving_dir>/pinned_version.json`, written by `python -m serving.store rollback`)."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from components.common.errors import ArtifactError
from components.serving_config.lifecycle import Holders
from serving.store.naming import pushed_version_of
from serving.store.pin import PIN_FILE


def read_pin(serving_dir: str) -> int | None:
    """The pushed version a rollback pinned, or None: `serving.store.pin.read_pin`'s reading,
    through tf.io.gfile (a serving_dir on an object store)."""
    path = os.path.join(serving_dir, PIN_FILE)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            body = json.load(f)
    except ValueError as error:
        raise ArtifactError(f"{path}: not a pin file ({error})") from None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ArtifactError(f"{path}: field 'version' must be a non-negative integer")
    return version


def redis_holders(redis_url: str) -> tuple[int | None, frozenset[int]]:
    """(pushed version of Redis `current`, pushed versions of every kept store version)."""
    from serving.store import StoreReader

    with StoreReader(redis_url) as reader:
        current, kept = reader.current_version(), reader.versions()
    found = (pushed_version_of(v) for v in kept)
    return pushed_version_of(current), frozenset(v for v in found if v is not None)


def holders(serving_dir: str, redis_url: str | None) -> Holders:
    current, kept = redis_holders(redis_url) if redis_url else (None, frozenset())
    return Holders(redis_current=current, redis_kept=kept, pinned=read_pin(serving_dir))
