"""Reading a version: bulk loads and online lookups, pinned to a version, with short timeouts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from serving.store.layout import (
    FLOAT,
    READER_CONNECT_TIMEOUT_S,
    READER_READ_TIMEOUT_S,
    Keys,
    StoreError,
    VersionNotFound,
    bucket_of,
    connect,
    guard,
    redacted,
)


class LoadedVersion(NamedTuple):
    """A whole version, read in bulk."""

    ids: list[str]
    item_embeddings: np.ndarray  # [n, d] float32
    item_vectors: np.ndarray  # [n, p] float32
    bias: float
    manifest: dict[str, Any]


class Lookup(NamedTuple):
    """Vectors of the known ids, in the order asked (duplicates kept), and the unknown ids."""

    ids: list[str]
    vectors: np.ndarray  # [len(ids), dim] float32
    unknown: list[str]


class StoreReader:
    """Reads versions from Redis; every call fails fast with `StoreUnavailable` on an outage.

    Methods take `version=None` for the current one; a service should pin the version it
    loaded so that its lookups come from the same model. Manifests are cached per version:
    a version never changes once written (a new publish makes a new version name).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        connect_timeout: float = READER_CONNECT_TIMEOUT_S,
        read_timeout: float = READER_READ_TIMEOUT_S,
    ) -> None:
        self.url = redis_url
        self.client = connect(redis_url, connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._manifests: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def ping(self) -> bool:
        with guard(self.url):
            return bool(self.client.ping())

    def current_version(self) -> str | None:
        """The live version, or None if nothing was published."""
        with guard(self.url):
            value = self.client.get(Keys.current)
        return value.decode() if value is not None else None

    def versions(self) -> list[str]:
        """Committed versions, newest first."""
        with guard(self.url):
            return [v.decode() for v in self.client.zrevrange(Keys.versions, 0, -1)]

    def _resolve(self, version: str | None) -> str:
        version = version if version is not None else self.current_version()
        if version is None:
            raise VersionNotFound(f"nothing is published in Redis at {redacted(self.url)}")
        return version

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        version = self._resolve(version)
        if version not in self._manifests:
            with guard(self.url):
                raw = self.client.get(Keys.manifest(version))
            if raw is None:
                raise VersionNotFound(f"version {version} is not in the store")
            if len(self._manifests) >= 16:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[version] = json.loads(raw)
        return self._manifests[version]

    def load(self, version: str | None = None) -> LoadedVersion:
        """Every item of a version: ids, embeddings `[n, d]`, pretrained vectors `[n, p]`, bias."""
        manifest = self.manifest(version)
        version = manifest["version"]
        table = manifest["tables"]["items"]
        n, columns = table["count"], table["columns"]
        arrays = {name: np.empty((n, dim), FLOAT) for name, dim in columns.items()}
        ids: list[str] = []
        rows = manifest["chunk_rows"]
        with guard(self.url):
            # one GET at a time: large pipelined replies were slower (parser buffering)
            for chunk in range(table["chunks"]):
                raw = self.client.get(Keys.ids(version, "items", chunk))
                blobs = {
                    name: self.client.get(Keys.column(version, "items", name, chunk))
                    for name in columns
                }
                if raw is None or any(blob is None for blob in blobs.values()):
                    raise VersionNotFound(f"version {version} was deleted while it was read")
                ids += json.loads(raw)
                for name, blob in blobs.items():
                    block = np.frombuffer(blob, FLOAT).reshape(-1, columns[name])
                    arrays[name][chunk * rows : chunk * rows + len(block)] = block
        if len(ids) != n:
            raise StoreError(f"version {version} holds {len(ids)} ids, its manifest says {n}")
        return LoadedVersion(
            ids, arrays["embeddings"], arrays["vectors"], float(manifest["bias"]), manifest
        )

    def item_vectors_for(self, ids: Sequence[str], version: str | None = None) -> Lookup:
        """Pretrained vectors of a few items (a user's history): two round trips."""
        return self._lookup("items", "vectors", [str(i) for i in ids], version)

    def user_vector(self, user_id: str, version: str | None = None) -> np.ndarray | None:
        """The pretrained vector of a user `[p]`, or None if the user is unknown."""
        manifest = self.manifest(version)
        if "users" not in manifest["tables"]:
            raise StoreError(f"version {manifest['version']} was published without user vectors")
        found = self._lookup("users", "vectors", [str(user_id)], manifest["version"])
        return found.vectors[0] if found.ids else None

    def _lookup(self, table: str, column: str, ids: list[str], version: str | None) -> Lookup:
        manifest = self.manifest(version)
        version, layout = manifest["version"], manifest["tables"][table]
        dim, chunk_rows = layout["columns"][column], manifest["chunk_rows"]
        buckets = sorted({bucket_of(i, layout["buckets"]) for i in ids})
        with guard(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(Keys.manifest(version))
            for bucket in buckets:
                pipe.get(Keys.rows(version, table, bucket))
            present, *mappings = pipe.execute()
            if not present:
                raise VersionNotFound(f"version {version} is no longer in the store")
            row_of: dict[str, int] = {}
            for mapping in mappings:
                row_of.update(json.loads(mapping) if mapping is not None else {})
            known = [i for i in ids if i in row_of]
            width = dim * FLOAT.itemsize
            for item in known:
                chunk, offset = divmod(row_of[item], chunk_rows)
                key = Keys.column(version, table, column, chunk)
                pipe.getrange(key, offset * width, (offset + 1) * width - 1)
            blobs = pipe.execute() if known else []
        if any(len(blob) != width for blob in blobs):
            raise VersionNotFound(f"version {version} was deleted while it was read")
        vectors = np.frombuffer(b"".join(blobs), FLOAT).reshape(len(known), dim)
        return Lookup(known, vectors, [i for i in ids if i not in row_of])
