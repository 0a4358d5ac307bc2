"""Paths that may be local or on an object store (gs://, s3://, TensorFlow's ram://).

Everything here goes through `tf.io.gfile`, never `pathlib`/`os.path` on a URI
(`pathlib.Path("gs://b/x")` is `gs:/b/x`). Libraries that only write local files (faiss,
annoy, gensim, matplotlib) write into a local folder that `upload_tree` then copies.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import tensorflow as tf


def is_remote(path: str | Path) -> bool:
    """True for a URI with a scheme (`gs://b/x`, `ram://x`), False for a local path."""
    return "://" in str(path)


def absolute(path: str) -> str:
    """A local path made absolute (ML Metadata and caches must not depend on the working
    directory); a URI as it is."""
    return path if is_remote(path) else os.path.abspath(path)


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a local path or a URI (keeps `gs://` intact)."""
    return os.path.join(str(base), *parts)


def parent(path: str) -> str:
    """The folder holding `path` (a URI keeps its scheme)."""
    return os.path.dirname(str(path).rstrip("/"))


def name(path: str) -> str:
    """The last part of `path`."""
    return os.path.basename(str(path).rstrip("/"))


def input_fingerprint(*paths: str | None) -> str:
    """A cache key for files passed as path parameters: path, size and mtime (ns) of each
    local file, the path alone for a URI or a missing file (TFX fingerprints only artifacts,
    so a changed file at the same path needs its stat in a parameter to run again)."""
    parts = []
    for path in paths:
        if path and not is_remote(path) and os.path.exists(path):
            stat = os.stat(path)
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        elif path:
            parts.append(path)
    return ";".join(parts)


def split_patterns(examples) -> list[str]:
    """The file globs of every split of an Examples artifact (`<uri>/Split-<name>/*`)."""
    from tfx.types import artifact_utils

    return [
        join(artifact_utils.get_split_uri([examples], split), "*")
        for split in artifact_utils.decode_split_names(examples.split_names)
    ]


class _GFileRaw(io.RawIOBase):
    """A `tf.io.gfile.GFile` as a raw stream: GFile has no `closed`, so pyarrow and gzip
    take it for a closed file ("I/O operation on closed file")."""

    def __init__(self, path: str) -> None:
        self._file = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def open_binary(path: str) -> BinaryIO:
    """Open a local or remote file for buffered reading; `.gz` is decompressed."""
    if is_remote(path):
        raw: BinaryIO = io.BufferedReader(_GFileRaw(path), buffer_size=1 << 20)
    else:
        raw = open(path, "rb")  # noqa: SIM115 (returned to the caller)
    return gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    tf.io.gfile.makedirs(parent(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def copy_tree(src: str, dst: str, *, last: str | None = None) -> None:
    """Copy the folder `src` to `dst` (either may be remote); the top-level file named `last`
    is copied last, so a reader that waits for it sees a complete folder."""
    deferred = []
    src = str(src).rstrip("/")
    for root, _dirs, files in tf.io.gfile.walk(src):
        rel = str(root).rstrip("/")[len(src) :].lstrip("/")
        target = join(dst, rel) if rel else str(dst)
        tf.io.gfile.makedirs(target)
        for file_name in files:
            pair = (join(root, file_name), join(target, file_name))
            if not rel and file_name == last:
                deferred.append(pair)
            else:
                tf.io.gfile.copy(*pair, overwrite=True)
    for pair in deferred:
        tf.io.gfile.copy(*pair, overwrite=True)


@contextlib.contextmanager
def local_copy(path: str | None) -> Iterator[Path | None]:
    """A local path holding the file at `path` (itself when local; None for None), for
    libraries that read only local files (gensim, pyarrow's CSV reader on a path)."""
    if path is None or not is_remote(path):
        yield None if path is None else Path(path)
        return
    folder = tempfile.mkdtemp(prefix="finetower-")
    try:
        local = Path(folder) / name(path)
        tf.io.gfile.copy(path, str(local))
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_tree(uri: str) -> Iterator[Path]:
    """A local folder holding a copy of the folder `uri` (itself when local)."""
    if not is_remote(uri):
        yield Path(uri)
        return
    folder = tempfile.mkdtemp(prefix="finetower-")
    try:
        copy_tree(uri, folder)
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def upload_files(folder: str | Path, names, uri: str) -> None:
    """Copy the files `names` of the local `folder` into the folder `uri` (made if absent)."""
    tf.io.gfile.makedirs(uri)
    for file_name in names:
        tf.io.gfile.copy(join(folder, file_name), join(uri, file_name), overwrite=True)
