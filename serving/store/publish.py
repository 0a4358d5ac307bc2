"""Publishing a version: chunks pipelined in, then one monotonic atomic switch; cleanup."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from components.common.errors import DataError
from serving.store.layout import (
    _CLAIM_ORPHAN,
    _COMMIT,
    _RETIRE,
    _VERSION_SAFE,
    DEFAULT_BATCH,
    FLOAT,
    IDS_PER_BUCKET,
    LEASE_S,
    PUBLISHER_READ_TIMEOUT_S,
    STORE_FORMAT,
    Keys,
    StoreError,
    bucket_of,
    connect,
    guard,
)


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
    committed: bool = True  # False: a newer or pinned `current` stays; `version` is deleted
    reason: str | None = None  # why it was not committed

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
            "committed": self.committed,
            "reason": self.reason,
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

    def commit(self, version: str, order: int, manifest: dict[str, Any]) -> tuple[bool, str | None]:
        """(True, previous current) once `version` is current; (False, why) when refused."""
        self.client.set(Keys.manifest(version), json.dumps(manifest))
        commit = self.client.register_script(_COMMIT)
        keys = [Keys.lease(version), Keys.current, Keys.versions, Keys.pending, Keys.pin]
        done, detail = commit(keys=keys, args=[self.client_id, version, order])
        return bool(done), detail.decode() if detail is not None else None


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


# table name -> (ids, {column: float32 [n, dim]})
Tables = dict[str, tuple[list[str], dict[str, np.ndarray]]]


def _checked_tables(
    fingerprint: str,
    ids: Sequence[str],
    item_embeddings: np.ndarray,
    item_vectors: np.ndarray,
    user_vectors: tuple[Sequence[str], np.ndarray] | None,
    keep: int,
    batch: int,
) -> Tables:
    """The tables to write, or DataError naming what is wrong: nothing reaches Redis first."""
    if not _VERSION_SAFE.match(fingerprint):
        raise DataError(f"model fingerprint {fingerprint!r} may hold only letters, digits, ._-")
    if keep < 0 or batch < 1:
        raise DataError(f"keep must be >= 0 and batch >= 1, got keep={keep}, batch={batch}")
    ids = _check_ids(ids, "item ids")
    if not ids:
        raise DataError("no items to publish: the service would have nothing to recall")
    tables: Tables = {
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
        vectors = _as_rows(user_vectors[1], "user vectors", len(user_ids))
        tables["users"] = (user_ids, {"vectors": vectors})
    return tables


def _manifest(
    version: str, fingerprint: str, bias: float, batch: int, layout: dict, source: dict | None
) -> dict[str, Any]:
    return {
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

    The switch is monotonic (see `layout`): when `current` is newer, or pinned by a rollback,
    the written version is deleted and the report says `committed=False` and why — a publish
    that lost a race ends cleanly, it does not raise.
    """
    tables = _checked_tables(fingerprint, ids, item_embeddings, item_vectors, user_vectors,
                             keep, batch)  # fmt: skip
    started = time.perf_counter()
    with guard(redis_url):
        publisher = _Publisher(redis_url, lease_s)
        try:
            cleaned = _clean_orphans(publisher.client)  # frees memory before writing
            version, order = publisher.start(fingerprint)
            try:
                layout = {
                    table: publisher.write_table(version, table, rows, columns, batch, progress)
                    for table, (rows, columns) in tables.items()
                }
                manifest = _manifest(version, fingerprint, bias, batch, layout, source)
                committed, previous = publisher.commit(version, order, manifest)
            except BaseException:
                _abandon(publisher.client, version)
                raise
            if not committed:
                _abandon(publisher.client, version)
            removed = _prune(publisher.client, keep) if committed else []
        finally:
            publisher.client.close()
    return PublishReport(
        version=version,
        model=fingerprint,
        items=len(tables["items"][0]),
        users=len(tables["users"][0]) if "users" in tables else 0,
        seconds=time.perf_counter() - started,
        megabytes=publisher.bytes / 2**20,
        previous=previous if committed else None,
        removed=removed,
        cleaned=cleaned,
        committed=committed,
        reason=None if committed else f"{version} not made current: {previous}",
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
