"""A versioned item store in Redis: publish a model's items, switch versions atomically, roll back.

Layout (every key is named by `Keys`, nowhere else). A version is `{fingerprint}-{token}`;
its namespace `finetower:v:{version}:` holds, per table (`items`, optionally `users`):

    {table}:ids:{c}        JSON list of the ids of rows [c * chunk_rows, (c + 1) * chunk_rows)
    {table}:{column}:{c}   those rows of a column, float32 little-endian, row-major
    {table}:rows:{b}       JSON {id: row} for the ids with crc32(utf-8 id) % buckets == b

plus `manifest` (JSON: model fingerprint, bias, counts, dims, chunking), written last.
Items have the columns `embeddings` (item tower outputs) and `vectors` (pretrained vectors);
users have `vectors`. Chunks make publishing and bulk loading run at memory speed (one SET or
GET per 10,000 rows); the row buckets (~64 ids each) make an online id lookup two round trips.
One Redis hash of 1M id -> row fields took ~4.7 s to write; the buckets take ~1 s.

`finetower:current` names the live version; it changes only inside Lua scripts (commit,
after the manifest is written; rollback), so a reader that reads `current` and then that
version's keys sees one whole version. Committed versions sit in the sorted set
`finetower:versions` (score: publish order). A publish registers its version in
`finetower:pending` and holds a lease key with its connection's client id; a publish that
died (its connection is gone or its lease expired) leaves a namespace that the next publish
deletes.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from finetower.errors import ArtifactError, DataError, FinetowerError

STORE_FORMAT = "finetower.store/1"
FLOAT = np.dtype("<f4")
DEFAULT_BATCH = 10_000
IDS_PER_BUCKET = 64
# online callers (the recall service) must never hang on an outage
READER_CONNECT_TIMEOUT_S = 0.5
READER_READ_TIMEOUT_S = 1.0
# a publish moves hundreds of megabytes: a slower server is not an outage
PUBLISHER_READ_TIMEOUT_S = 30.0
LEASE_S = 60
_VERSION_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")  # no SCAN glob characters


class StoreError(FinetowerError):
    """The Redis store refused an operation or holds something unexpected."""


class StoreUnavailable(StoreError):
    """Redis could not be reached (refused, timed out): retry later."""


class VersionNotFound(StoreError):
    """The version asked for is not (or no longer) in the store."""


class Keys:
    """Every Redis key the store reads or writes."""

    current = "finetower:current"
    versions = "finetower:versions"  # sorted set: committed version -> publish order
    pending = "finetower:pending"  # set: versions being written or being deleted
    sequence = "finetower:sequence"

    @staticmethod
    def namespace(version: str) -> str:
        return f"finetower:v:{version}:"

    @classmethod
    def manifest(cls, version: str) -> str:
        return f"{cls.namespace(version)}manifest"

    @classmethod
    def lease(cls, version: str) -> str:
        return f"{cls.namespace(version)}lease"

    @classmethod
    def ids(cls, version: str, table: str, chunk: int) -> str:
        return f"{cls.namespace(version)}{table}:ids:{chunk}"

    @classmethod
    def column(cls, version: str, table: str, column: str, chunk: int) -> str:
        return f"{cls.namespace(version)}{table}:{column}:{chunk}"

    @classmethod
    def rows(cls, version: str, table: str, bucket: int) -> str:
        return f"{cls.namespace(version)}{table}:rows:{bucket}"


# Lua: each runs atomically in Redis, so no reader sees a half-made switch.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('publish lease lost: another publish cleaned this version')
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
local previous = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[2])
return previous
"""  # KEYS: lease, current, versions, pending; ARGV: client id, version, order
_SWITCH = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('version ' .. ARGV[1] .. ' is not kept in the store')
end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return previous
"""  # KEYS: current, versions, manifest; ARGV: version
_RETIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""  # KEYS: current, versions, pending; ARGV: version. Pending until deleted: a crash resumes
_CLAIM_ORPHAN = """
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""  # KEYS: lease, versions; ARGV: lease value seen ('' if none), version


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def connect(
    redis_url: str,
    *,
    connect_timeout: float = READER_CONNECT_TIMEOUT_S,
    read_timeout: float = READER_READ_TIMEOUT_S,
    single_connection: bool = False,
) -> redis.Redis:
    """A client with short timeouts and no retries: an outage fails fast, never hangs."""
    try:
        return redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=single_connection,
        )
    except ValueError as error:  # the URL is parsed here; the connection opens on first use
        raise StoreError(f"bad Redis URL {redacted(redis_url)}: {error}") from None


@contextlib.contextmanager
def _guard(url: str) -> Iterator[None]:
    """Turn redis-py errors into store errors that name the server."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise StoreUnavailable(f"Redis at {redacted(url)} is unreachable: {error}") from None
    except redis.RedisError as error:
        raise StoreError(f"Redis at {redacted(url)}: {error}") from None


def bucket_of(item_id: str, buckets: int) -> int:
    """The row bucket of an id: crc32 of its UTF-8 bytes modulo the bucket count."""
    return zlib.crc32(item_id.encode()) % buckets


def _as_rows(array: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=FLOAT)
    if array.ndim != 2 or (n is not None and len(array) != n):
        want = f"[{n}, dim]" if n is not None else "[n, dim]"
        raise DataError(f"{name} has shape {tuple(array.shape)}, expected {want}")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinity")
    return array


def _check_ids(ids: Sequence[str], name: str) -> list[str]:
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise DataError(f"{name} holds duplicate ids: a lookup by id would be ambiguous")
    return ids


@dataclass
class PublishReport:
    """What a publish did."""

    version: str
    model: str
    items: int
    users: int
    seconds: float
    megabytes: float
    previous: str | None
    removed: list[str] = field(default_factory=list)  # old versions beyond `keep`
    cleaned: list[str] = field(default_factory=list)  # half-written versions of dead publishes

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": self.model,
            "items": self.items,
            "users": self.users,
            "seconds": round(self.seconds, 3),
            "items_per_s": round(self.items_per_s, 1),
            "megabytes": round(self.megabytes, 1),
            "previous": self.previous,
            "removed": self.removed,
            "cleaned": self.cleaned,
        }


class _Publisher:
    """One publish. Its held connection's client id is the lease that says it is alive."""

    def __init__(self, redis_url: str, lease_s: int) -> None:
        self.url, self.lease_s = redis_url, lease_s
        self.client = connect(
            redis_url, read_timeout=PUBLISHER_READ_TIMEOUT_S, single_connection=True
        )
        self.client_id = str(self.client.client_id())
        self.bytes = 0

    def start(self, fingerprint: str) -> tuple[str, int]:
        version = f"{fingerprint}-{secrets.token_hex(4)}"
        order = int(self.client.incr(Keys.sequence))
        self.client.sadd(Keys.pending, version)
        self.client.set(Keys.lease(version), self.client_id, ex=self.lease_s)
        return version, order

    def write_table(
        self,
        version: str,
        table: str,
        ids: list[str],
        columns: dict[str, np.ndarray],
        batch: int,
        progress: Callable[[str, int, int], None] | None,
    ) -> dict[str, Any]:
        """Write a table's chunks and row buckets; return its manifest entry."""
        n = len(ids)
        for chunk, start in enumerate(range(0, n, batch)):
            stop = min(start + batch, n)
            pipe = self.client.pipeline(transaction=False)
            pipe.set(Keys.ids(version, table, chunk), json.dumps(ids[start:stop]))
            for name, array in columns.items():
                # a memoryview goes to the socket uncopied (without hiredis' packer: ~1 GB/s)
                block = memoryview(array[start:stop]).cast("B")
                pipe.set(Keys.column(version, table, name, chunk), block)
                self.bytes += block.nbytes
            self._renew_lease(pipe, version)
            if progress is not None:
                progress(table, stop, n)
        buckets = max(1, -(-n // IDS_PER_BUCKET))
        for group in _grouped(_buckets(ids, buckets), 1000):
            pipe = self.client.pipeline(transaction=False)
            for bucket, row_of in group:
                pipe.set(Keys.rows(version, table, bucket), json.dumps(row_of))
            self._renew_lease(pipe, version)
        return {
            "count": n,
            "chunks": -(-n // batch),
            "buckets": buckets,
            "columns": {name: int(array.shape[1]) for name, array in columns.items()},
        }

    def _renew_lease(self, pipe: Any, version: str) -> None:
        """Run the batch in `pipe` with a lease renewal; stop if another publish took it."""
        pipe.set(Keys.lease(version), self.client_id, ex=self.lease_s, xx=True)
        if pipe.execute()[-1] is None:
            raise StoreError(
                f"publish of {version} lost its lease (more than {self.lease_s} s between "
                "batches, or another publish took it for dead): nothing was switched"
            )

    def commit(self, version: str, order: int, manifest: dict[str, Any]) -> str | None:
        self.client.set(Keys.manifest(version), json.dumps(manifest))
        commit = self.client.register_script(_COMMIT)
        keys = [Keys.lease(version), Keys.current, Keys.versions, Keys.pending]
        previous = commit(keys=keys, args=[self.client_id, version, order])
        return previous.decode() if previous is not None else None


def _buckets(ids: list[str], buckets: int) -> Iterator[tuple[int, dict[str, int]]]:
    """(bucket, {id: row}) for each non-empty bucket."""
    of = np.fromiter((bucket_of(i, buckets) for i in ids), np.int64, len(ids))
    order = np.argsort(of, kind="stable")
    bounds = np.searchsorted(of[order], np.arange(buckets + 1)).tolist()
    rows = order.tolist()
    in_order = [ids[row] for row in rows]
    for bucket in range(buckets):
        start, stop = bounds[bucket], bounds[bucket + 1]
        if start < stop:
            yield bucket, dict(zip(in_order[start:stop], rows[start:stop], strict=True))


def _grouped(items: Iterable, size: int) -> Iterator[list]:
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _delete_namespace(client: redis.Redis, version: str, batch: int = 1000) -> None:
    """UNLINK every key of a version, found by SCAN in batches (never KEYS)."""
    doomed: list[bytes] = []
    for key in client.scan_iter(match=f"{Keys.namespace(version)}*", count=batch):
        doomed.append(key)
        if len(doomed) == batch:
            client.unlink(*doomed)
            doomed = []
    if doomed:
        client.unlink(*doomed)


def _lease_holder_alive(client: redis.Redis, lease: bytes | None) -> bool:
    if lease is None:
        return False  # expired: no renewal for LEASE_S
    try:
        return bool(client.client_list(client_id=[lease.decode()]))
    except redis.ResponseError:
        return True  # CLIENT is disabled on this server: trust the lease's expiry alone


def _clean_orphans(client: redis.Redis) -> list[str]:
    """Delete the namespaces of publishes that died half-way and of interrupted deletions."""
    claim = client.register_script(_CLAIM_ORPHAN)
    cleaned = []
    for member in sorted(client.smembers(Keys.pending)):
        version = member.decode()
        lease = client.get(Keys.lease(version))
        if _lease_holder_alive(client, lease):
            continue
        seen = lease.decode() if lease is not None else ""
        if not claim(keys=[Keys.lease(version), Keys.versions], args=[seen, version]):
            continue  # it was committed, or renewed, meanwhile
        _delete_namespace(client, version)
        client.srem(Keys.pending, version)
        cleaned.append(version)
    return cleaned


def _prune(client: redis.Redis, keep: int) -> list[str]:
    """Delete committed versions beyond the `keep` newest that are not current."""
    current = client.get(Keys.current)
    old = [v for v in client.zrevrange(Keys.versions, 0, -1) if v != current]
    retire = client.register_script(_RETIRE)
    removed = []
    for member in old[keep:]:
        version = member.decode()
        if retire(keys=[Keys.current, Keys.versions, Keys.pending], args=[version]):
            _delete_namespace(client, version)
            client.srem(Keys.pending, version)
            removed.append(version)
    return removed


def publish(
    redis_url: str,
    fingerprint: str,
    ids: Sequence[str],
    item_embeddings: np.ndarray,
    item_vectors: np.ndarray,
    bias: float,
    user_vectors: tuple[Sequence[str], np.ndarray] | None = None,
    *,
    keep: int = 2,
    batch: int = DEFAULT_BATCH,
    source: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    lease_s: int = LEASE_S,
) -> PublishReport:
    """Write a model's items as a new version, then make it current in one atomic switch.

    `item_embeddings [n, d]` are the item tower outputs, `item_vectors [n, p]` the pretrained
    vectors (to turn a history into a user vector online), rows in `ids` order; `user_vectors`
    = (user ids, `[m, p']`) for lookups by user id. `keep` older versions stay for rollback;
    older ones are deleted, and so are versions left half-written by a publish that died.
    `progress(table, rows_written, rows_total)` is called after each batch; an exception it
    raises aborts the publish with `current` untouched.
    """
    if not _VERSION_SAFE.match(fingerprint):
        raise DataError(f"model fingerprint {fingerprint!r} may hold only letters, digits, ._-")
    if keep < 0 or batch < 1:
        raise DataError(f"keep must be >= 0 and batch >= 1, got keep={keep}, batch={batch}")
    ids = _check_ids(ids, "item ids")
    if not ids:
        raise DataError("no items to publish: the service would have nothing to recall")
    tables = {
        "items": (
            ids,
            {
                "embeddings": _as_rows(item_embeddings, "item embeddings", len(ids)),
                "vectors": _as_rows(item_vectors, "item vectors", len(ids)),
            },
        )
    }
    if user_vectors is not None:
        user_ids = _check_ids(user_vectors[0], "user ids")
        tables["users"] = (
            user_ids,
            {"vectors": _as_rows(user_vectors[1], "user vectors", len(user_ids))},
        )
    started = time.perf_counter()
    with _guard(redis_url):
        publisher = _Publisher(redis_url, lease_s)
        try:
            cleaned = _clean_orphans(publisher.client)  # frees memory before writing
            version, order = publisher.start(fingerprint)
            try:
                layout = {
                    table: publisher.write_table(version, table, rows, columns, batch, progress)
                    for table, (rows, columns) in tables.items()
                }
                manifest = {
                    "format": STORE_FORMAT,
                    "version": version,
                    "model": fingerprint,
                    "bias": float(bias),
                    "chunk_rows": batch,
                    "dtype": FLOAT.str,
                    "tables": layout,
                    "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source": source or {},
                }
                previous = publisher.commit(version, order, manifest)
            except BaseException:
                _abandon(publisher.client, version)
                raise
            removed = _prune(publisher.client, keep)
        finally:
            publisher.client.close()
    return PublishReport(
        version=version,
        model=fingerprint,
        items=len(ids),
        users=len(tables["users"][0]) if "users" in tables else 0,
        seconds=time.perf_counter() - started,
        megabytes=publisher.bytes / 2**20,
        previous=previous,
        removed=removed,
        cleaned=cleaned,
    )


def _abandon(client: redis.Redis, version: str) -> None:
    """Best effort: delete our own half-written version now (else the next publish does)."""
    try:
        if client.zscore(Keys.versions, version) is None:
            client.delete(Keys.lease(version))
            _delete_namespace(client, version)
            client.srem(Keys.pending, version)
    except redis.RedisError:
        pass  # left pending without a live lease: the next publish cleans it


def rollback(redis_url: str, to: str | None = None) -> dict[str, str | None]:
    """Make a kept version current: the one published before the current one, or `to`.

    `to` is a version or a model fingerprint (its newest kept version). Returns
    `{"previous": ..., "current": ...}`.
    """
    with _guard(redis_url):
        client = connect(redis_url)
        try:
            kept = [v.decode() for v in client.zrevrange(Keys.versions, 0, -1)]
            current = client.get(Keys.current)
            current = current.decode() if current is not None else None
            if to is None:
                older = kept[kept.index(current) + 1 :] if current in kept else []
                if not older:
                    raise VersionNotFound(
                        f"no version older than {current} is kept: nothing to roll back to"
                    )
                target = older[0]
            else:
                matches = [v for v in kept if v == to or v.rsplit("-", 1)[0] == to]
                if not matches:
                    raise VersionNotFound(f"{to!r} is not a kept version; kept: {kept}")
                target = matches[0]
            switch = client.register_script(_SWITCH)
            previous = switch(
                keys=[Keys.current, Keys.versions, Keys.manifest(target)], args=[target]
            )
        finally:
            client.close()
    return {"previous": previous.decode() if previous else None, "current": target}


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
        with _guard(self.url):
            return bool(self.client.ping())

    def current_version(self) -> str | None:
        """The live version, or None if nothing was published."""
        with _guard(self.url):
            value = self.client.get(Keys.current)
        return value.decode() if value is not None else None

    def versions(self) -> list[str]:
        """Committed versions, newest first."""
        with _guard(self.url):
            return [v.decode() for v in self.client.zrevrange(Keys.versions, 0, -1)]

    def _resolve(self, version: str | None) -> str:
        version = version if version is not None else self.current_version()
        if version is None:
            raise VersionNotFound(f"nothing is published in Redis at {redacted(self.url)}")
        return version

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        version = self._resolve(version)
        if version not in self._manifests:
            with _guard(self.url):
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
        with _guard(self.url):
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
        with _guard(self.url):
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


@dataclass
class IndexCatalog:
    """What `publish` needs from an index directory (see `load_index_catalog`)."""

    fingerprint: str
    ids: list[str]
    item_embeddings: np.ndarray  # [n, d] float32, rows in `ids` order
    item_vectors: np.ndarray  # [n, p] float32
    bias: float
    source: dict[str, Any]


def load_index_catalog(index_dir: str | Path, items: str | Path | None = None) -> IndexCatalog:
    """Read an index directory from `finetower index`: its ids, model and item vectors.

    The item embeddings are recomputed with the run copy the index holds (the index does not
    keep them in a backend-neutral form); the item vectors are the file the index recorded,
    checked by checksum, unless `items` names another copy of it.
    """
    # imported here: readers of the store (the recall service's hot path) need no torch/faiss
    from finetower.artifacts import file_sha256, read_json
    from finetower.export import item_embeddings
    from finetower.index import read_manifest
    from finetower.index.base import IDS_FILE
    from finetower.recall import RUN_COPY
    from finetower.runs import load_run, run_fingerprint
    from finetower.vectors import read_vectors

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    fingerprint, run_dir = manifest.get("model", ""), index_dir / RUN_COPY
    if run_fingerprint(run_dir) != fingerprint:
        raise ArtifactError(f"{run_dir} does not hold model {fingerprint} that {index_dir} names")
    items_path = Path(items) if items is not None else Path(manifest["items"])
    if not items_path.exists():
        raise ArtifactError(f"pretrained item vectors {items_path} not found: pass --items")
    if file_sha256(items_path) != manifest.get("items_sha256"):
        raise ArtifactError(f"{items_path} is not the item vector file {index_dir} was built from")
    vectors = read_vectors(items_path)
    ids = [str(i) for i in read_json(index_dir / IDS_FILE)]
    row_of = vectors.index()
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise ArtifactError(f"{len(missing)} index ids are not in {items_path}, e.g. {missing[0]}")
    rows = np.fromiter((row_of[i] for i in ids), np.int64, len(ids))
    in_order = np.array_equal(rows, np.arange(len(vectors)))
    item_vectors = vectors.vectors if in_order else vectors.vectors[rows]
    model = load_run(run_dir)
    return IndexCatalog(
        fingerprint=fingerprint,
        ids=ids,
        item_embeddings=item_embeddings(model, item_vectors, source=items_path),
        item_vectors=item_vectors,
        bias=float(model.output_bias),
        source={
            "index": str(index_dir.resolve()),
            "backend": manifest.get("backend"),
            "items": str(items_path.resolve()),
        },
    )
