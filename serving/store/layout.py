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

Publishing is monotonic: the commit refuses to replace `current` with an older version (a lower
pushed version when both are named `v<n>-<token>`, else one whose publish started earlier), and
refuses anything while `finetower:pin` is set. Only a rollback moves `current` back; the CLI's
rollback also pins (`python -m serving.store rollback --to N`, `... unpin`).
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from components.common.errors import FinetowerError
from serving.store.naming import STORE_VERSION_LUA

STORE_FORMAT = "serving.store/1"
FLOAT = np.dtype("<f4")
DEFAULT_BATCH = 10_000
IDS_PER_BUCKET = 64
# online callers (the recall service) must never hang on an outage
READER_CONNECT_TIMEOUT_S = 0.5
READER_READ_TIMEOUT_S = 1.0
# a publish moves hundreds of megabytes: a slower server is not an outage
PUBLISHER_READ_TIMEOUT_S = 30.0
LEASE_S = 60
# the Redis password of a URL given without one: the pipeline records its steps' URLs in ML
# Metadata and compiled specs, so its URLs carry no password and the steps read it here
REDIS_PASSWORD_ENV = "FINETOWER_REDIS_PASSWORD"
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
    pin = "finetower:pin"  # set by a pinning rollback: no commit moves `current` meanwhile

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
local function pushed(version)
  local n = string.match(version, '@STORE_VERSION@')
  if n then return tonumber(n) end
  return nil
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('publish lease lost: another publish cleaned this version')
end
local previous = redis.call('GET', KEYS[2])
local refusal = nil
local pinned = redis.call('GET', KEYS[5])
if pinned then
  refusal = 'current is pinned to ' .. pinned .. ' by a rollback'
elseif previous then
  local mine, theirs = pushed(ARGV[2]), pushed(previous)
  if mine and theirs then
    if mine <= theirs then refusal = previous .. ' is current, a push as new or newer' end
  elseif tonumber(redis.call('ZSCORE', KEYS[3], previous) or '-1') > tonumber(ARGV[3]) then
    refusal = previous .. ' is current, published by a publish that started later'
  end
end
redis.call('DEL', KEYS[1])
if refusal then return {0, refusal} end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
return {1, previous or false}
""".replace(
    "@STORE_VERSION@", STORE_VERSION_LUA
)  # KEYS: lease, current, versions, pending, pin; ARGV: client id, version, order.
# Returns {1, previous} when committed, {0, why} when refused (the caller deletes its version).
_SWITCH = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('version ' .. ARGV[1] .. ' is not kept in the store')
end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[4], ARGV[1]) else redis.call('DEL', KEYS[4]) end
return previous
"""  # KEYS: current, versions, manifest, pin; ARGV: version, 1 to pin it (0 unpins)
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
    """A client with short timeouts and no retries: an outage fails fast, never hangs. A URL
    without a password takes the one in $FINETOWER_REDIS_PASSWORD, if set."""
    password = os.environ.get(REDIS_PASSWORD_ENV) or None
    try:
        return redis.Redis.from_url(
            redis_url,
            # redis-py lets the URL's own password win over this one
            **({"password": password} if password else {}),
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=single_connection,
        )
    except ValueError as error:  # the URL is parsed here; the connection opens on first use
        raise StoreError(f"bad Redis URL {redacted(redis_url)}: {error}") from None


@contextlib.contextmanager
def guard(url: str) -> Iterator[None]:
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
