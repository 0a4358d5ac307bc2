"""The recall service: `POST /recall`, `GET /health`, `GET /metrics` over one model version.

A *snapshot* answers requests: a model (its user tower), an item index built from that same
model's item embeddings, and where history items' pretrained vectors come from. It never
changes; a request takes the current snapshot once and keeps it to the end, and a new
version is swapped in by replacing that one reference, so no request sees a mix.

Without Redis the snapshot is the index directory (`Recaller`'s artifacts), loaded at start.

With Redis the snapshot follows the store's current version (`finetower:current`):
- A background thread polls the current key every `poll_interval_s`; a new version is loaded
  in another thread while the old snapshot keeps answering, then swapped in.
- The model is found by the version's fingerprint: the index directory's run copy, else a run
  directory (or an index directory with its run copy) directly under `models_dir`. A version
  whose model is not found, or whose bias differs, is refused: the service keeps serving the
  version it has, and /health names the problem.
- The item index: the local index directory (or one under `models_dir`) when it was built
  from the same model over the same item ids and the same item-vector file as the version,
  else one built from the version's embeddings with the local index's backend and parameters.
- History items' pretrained vectors (and user vectors) are read per request from the pinned
  version (`history_vectors="store"`, the default): the pretrained catalogue is never held in
  memory, and it is always the version the index came from. `history_vectors="memory"` keeps
  the version's copy loaded with the index instead: no Redis on a history request's path
  (lower tail latency), 4 x item_dim bytes per item more memory. A `user_vector` request
  needs no Redis and keeps working in an outage.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from finetower.errors import ArtifactError
from finetower.index import ItemIndex, load_index, make_index, read_manifest
from finetower.index.base import IDS_FILE
from finetower.model import TwoTowerModel
from finetower.recall import RUN_COPY, Recaller, top_items
from finetower.runs import CONFIG_FILE, load_run, run_fingerprint
from finetower.serve.metrics import Metrics
from finetower.store import (
    LoadedVersion,
    StoreError,
    StoreReader,
    StoreUnavailable,
    VersionNotFound,
    redacted,
)
from finetower.user_vectors import DEFAULT_LAST_N, history_weights, user_vector
from finetower.vectors import Vectors, read_vectors

MAX_K = 1000
MAX_HISTORY = 1000
MAX_ID_CHARS = 256
MAX_VECTOR_DIM = 4096
MAX_BODY_BYTES = 1 << 20  # a longest history of longest ids is ~260 KB
DEFAULT_POLL_S = 0.5
# with Redis, where history items' pretrained vectors come from: per request from the pinned
# version ("store": no catalogue in memory), or the version's copy loaded with the index
# ("memory": no Redis on a request's path; 4 bytes x dim x items more memory)
HISTORY_VECTORS = ("store", "memory")
API_KEY_ENV = "FINETOWER_API_KEY"

log = logging.getLogger("finetower.serve")

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class RecallRequest(BaseModel):
    """Exactly one of `history` (oldest -> newest), `user_vector`, `user_id`; top `k`.

    Defaults are `finetower recall`'s, so the same input gives the same answer.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    history: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_HISTORY)
    user_vector: list[Number] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM)
    user_id: ItemId | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> RecallRequest:
        given = [n for n in ("history", "user_vector", "user_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of history, user_vector, user_id; got {given}")
        if self.exclude_seen and self.history is None:
            raise ValueError("exclude_seen applies to history only")
        return self


class RecallError(Exception):
    """A request the service answers with `status` and a message naming `field`."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field

    def response(self) -> JSONResponse:
        prefix = f"{self.field}: " if self.field else ""
        return JSONResponse({"error": prefix + str(self), "field": self.field}, self.status)


@dataclass(frozen=True)
class Snapshot:
    """One consistent model version: user tower, item index, pretrained vectors' source."""

    fingerprint: str
    model: TwoTowerModel
    index: ItemIndex
    index_source: str
    version: str | None = None  # the pinned store version; None: local artifacts
    item_vectors: Vectors | None = None  # local, or the version's in memory; else from Redis
    item_rows: dict[str, int] | None = None
    user_vectors: Vectors | None = None
    user_rows: dict[str, int] | None = None
    store_users: bool = False  # the store version holds user vectors


def top_k(
    snapshot: Snapshot, vector: np.ndarray, k: int, exclude: set[str] | frozenset = frozenset()
) -> list[dict[str, Any]]:
    """The k best items for a pretrained user vector `[user_dim]`, as `Recaller` ranks them."""
    return top_items(snapshot.model, snapshot.index, vector, k, exclude)


class RecallService:
    """Holds the current snapshot, answers recall requests, follows the store's version."""

    def __init__(
        self,
        index_dir: str | Path,
        redis_url: str | None = None,
        *,
        models_dir: str | Path | None = None,
        user_vectors: str | Path | None = None,
        last_n: int | None = DEFAULT_LAST_N,
        poll_interval_s: float = DEFAULT_POLL_S,
        history_vectors: str = "store",
    ) -> None:
        if history_vectors not in HISTORY_VECTORS:
            raise ValueError(f"history_vectors must be one of {HISTORY_VECTORS}")
        self.history_vectors = history_vectors
        self.index_dir = Path(index_dir)
        self.local_manifest = read_manifest(self.index_dir)  # not an index: fail now
        self.models_dir = Path(models_dir) if models_dir is not None else None
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise ArtifactError(f"models directory {self.models_dir} does not exist")
        self.redis_url, self.last_n = redis_url, last_n
        self.poll_interval_s = min(max(poll_interval_s, 0.05), 60.0)
        self.metrics = Metrics()
        self._snapshot: Snapshot | None = None
        self._current: str | None = None  # the store's current version, last seen
        self._redis_problem: str | None = None
        self._load_problem: str | None = None
        self._failed: tuple[str, float] | None = None  # (version, when): retried after a while
        self._loading: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if redis_url is None:
            if user_vectors is not None:
                user_vectors = read_vectors(user_vectors)
            self._snapshot = self._local_snapshot(user_vectors)
            self._requests = self._poller = None
        else:
            if user_vectors is not None:
                raise ArtifactError("with Redis, user vectors come from the store: publish them")
            # two clients: the poller's manifest cache never races the requests'
            self._requests = StoreReader(redis_url)
            self._poller = StoreReader(redis_url)

    # -- loading ---------------------------------------------------------------------------

    def _local_snapshot(self, user_vectors: Vectors | None) -> Snapshot:
        recaller = Recaller(self.index_dir, user_vectors=user_vectors, last_n=self.last_n)
        return Snapshot(
            fingerprint=recaller.fingerprint,
            model=recaller.model,
            index=recaller.index,
            index_source=str(self.index_dir),
            item_vectors=recaller.item_vectors,
            item_rows=recaller.item_rows,
            user_vectors=recaller.user_vectors,
            user_rows=recaller.user_rows,
        )

    def _candidates(self) -> list[Path]:
        """The index directory, then every directory directly under `models_dir`."""
        found = [self.index_dir]
        if self.models_dir is not None:
            found += sorted(p for p in self.models_dir.iterdir() if p.is_dir())
        return found

    def _find_run(self, fingerprint: str) -> Path:
        for place in self._candidates():
            for run_dir in (place, place / RUN_COPY):
                try:
                    if (run_dir / CONFIG_FILE).exists() and run_fingerprint(run_dir) == fingerprint:
                        return run_dir
                except (OSError, ValueError, KeyError):
                    continue  # not a readable run: look further
        where = f"{self.index_dir / RUN_COPY}" + (
            f" or under {self.models_dir}" if self.models_dir else " (no --models directory)"
        )
        raise ArtifactError(
            f"model {fingerprint} is not found in {where}: put its run or index directory "
            "under --models; its store version is not served"
        )

    def _index_for(self, loaded: LoadedVersion) -> tuple[ItemIndex, str]:
        """An index of `loaded`'s items by its model: a saved one if one matches, else built."""
        source = loaded.manifest.get("source", {})
        for place in self._candidates():
            try:
                manifest = read_manifest(place)
            except (ArtifactError, OSError, ValueError):
                continue
            same = (
                manifest.get("model") == loaded.manifest["model"]
                and manifest.get("count") == len(loaded.ids)
                and manifest.get("items") is not None
                and manifest.get("items") == source.get("items")
            )
            if same and json.loads((place / IDS_FILE).read_text()) == loaded.ids:
                return load_index(place), str(place)
        backend, params = self.local_manifest["backend"], self.local_manifest.get("params", {})
        index = make_index(backend, **params).build(loaded.item_embeddings, loaded.ids)
        return index, f"built from store version {loaded.manifest['version']} ({backend})"

    def _store_snapshot(self, version: str) -> Snapshot:
        """Load a store version and the model it names; refuse any inconsistency."""
        manifest = self._poller.manifest(version)
        fingerprint = manifest["model"]
        model = load_run(self._find_run(fingerprint))
        if not math.isclose(model.output_bias, manifest["bias"], rel_tol=1e-6, abs_tol=1e-7):
            raise ArtifactError(
                f"store version {version} has bias {manifest['bias']}, model {fingerprint} "
                f"has {model.output_bias}: not the same model"
            )
        loaded = self._poller.load(version)
        expected = {"embeddings": model.config.embedding_dim, "vectors": model.config.item_dim}
        columns = manifest["tables"]["items"]["columns"]
        if columns != expected:
            raise ArtifactError(
                f"store version {version} holds columns {columns}; model {fingerprint} "
                f"needs {expected}"
            )
        index, index_source = self._index_for(loaded)
        in_memory = self.history_vectors == "memory"
        item_vectors = Vectors(loaded.item_vectors, loaded.ids) if in_memory else None
        self._requests.manifest(version)  # cached before any request reads it
        return Snapshot(
            fingerprint=fingerprint,
            model=model,
            index=index,
            index_source=index_source,
            version=version,
            item_vectors=item_vectors,
            item_rows=item_vectors.index() if item_vectors is not None else None,
            store_users="users" in manifest["tables"],
        )

    def _load(self, version: str) -> None:
        try:
            snapshot = self._store_snapshot(version)
        except StoreUnavailable as error:
            self._redis_problem = str(error)
            self.metrics.error("store_unavailable")
        except Exception as error:  # a bad version must not kill the loader: report it
            self._load_problem = f"version {version} not loaded: {error}"
            self._failed = (version, time.monotonic())
            self.metrics.error("load_failed")
            log.error("%s", self._load_problem)
        else:
            previous, self._snapshot = self._snapshot, snapshot  # the swap: one reference
            self._load_problem = self._failed = None
            self.metrics.switched()
            log.info(
                "serving version %s (model %s, %s items, index %s; was %s)",
                version, snapshot.fingerprint, len(snapshot.index), snapshot.index_source,
                previous.version if previous else None,
            )  # fmt: skip
        finally:
            self._loading = None

    def refresh(self) -> None:
        """One poll: read the current version; start loading it if it is new."""
        try:
            current = self._poller.current_version()
        except StoreUnavailable as error:
            if self._redis_problem is None:
                log.warning("%s", error)
            self._redis_problem = str(error)
            self.metrics.error("store_unavailable")
            return
        if self._redis_problem is not None:
            log.info("Redis at %s answers again", redacted(self.redis_url))
        self._redis_problem, self._current = None, current
        snapshot = self._snapshot
        if current is None or self._loading is not None:
            return
        if snapshot is not None and snapshot.version == current:
            return
        retry_s = max(10.0, 10 * self.poll_interval_s)
        if (
            self._failed
            and self._failed[0] == current
            and time.monotonic() < self._failed[1] + retry_s
        ):
            return
        self._loading = current
        loader = threading.Thread(target=self._load, args=(current,), name="finetower-load")
        loader.daemon = True  # an index build is not interruptible; exit does not wait for it
        self._threads = [t for t in self._threads if t.is_alive()] + [loader]
        loader.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:  # e.g. a key of the wrong type: report, keep polling
                self._redis_problem = f"Redis at {redacted(self.redis_url)}: {error}"
                self.metrics.error("store_error")
            self._stop.wait(self.poll_interval_s)  # the poll interval; stop() wakes it

    def start(self) -> None:
        if self.redis_url is None or self._threads:
            return
        poller = threading.Thread(target=self._poll, name="finetower-poll", daemon=True)
        self._threads.append(poller)
        poller.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.poll_interval_s + 2 * 1.5)  # a poll ends in its timeouts
        for reader in (self._requests, self._poller):
            if reader is not None:
                reader.close()

    # -- answering -------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ready, what is loaded and why not ready)."""
        snapshot = self._snapshot
        reason = None
        if self.redis_url is not None and self._redis_problem is not None:
            reason = self._redis_problem
        elif snapshot is None:
            if self._loading:
                reason = f"loading version {self._loading}"
            elif self._load_problem:
                reason = self._load_problem
            else:
                reason = "nothing is published in Redis yet" if self.redis_url else "not loaded"
        elif self.redis_url is not None and self._current is None:
            reason = (
                f"nothing is published in Redis (the version served, {snapshot.version}, is gone)"
            )
        body: dict[str, Any] = {
            "ready": reason is None,
            "reason": reason,
            "model": snapshot.fingerprint if snapshot else None,
            "version": snapshot.version if snapshot else None,
            "items": len(snapshot.index) if snapshot else 0,
            "backend": snapshot.index.backend if snapshot else None,
            "index": snapshot.index_source if snapshot else None,
        }
        if self.redis_url is not None:
            body.update(
                redis="unreachable" if self._redis_problem else "ok",
                current=self._current,
                loading=self._loading,
                problem=self._load_problem,
            )
        return reason is None, body

    def recall(self, request: RecallRequest) -> dict[str, Any]:
        """The answer to one request; raises `RecallError` for what the client should see."""
        snapshot = self._snapshot
        if snapshot is None:
            raise RecallError(503, self.health()[1]["reason"])
        for attempt in range(2):
            try:
                return self._recall(snapshot, request)
            except VersionNotFound as error:
                self.metrics.error("version_gone")
                newer = self._snapshot
                if attempt == 0 and newer is not None and newer is not snapshot:
                    snapshot = newer  # pruned after a switch: answer from the new version
                    continue
                message = f"store version {snapshot.version} is gone: {error}"
                raise RecallError(503, message) from None
            except StoreUnavailable as error:
                self.metrics.error("store_unavailable")
                raise RecallError(503, str(error)) from None
            except StoreError as error:  # Redis answered, but not what a version holds
                self.metrics.error("store_error")
                raise RecallError(502, str(error)) from None
        raise AssertionError("unreachable")

    def _recall(self, snapshot: Snapshot, request: RecallRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        exclude: set[str] = set()
        if request.history is not None:
            vector, unknown = self._history_vector(snapshot, request.history)
            if vector is None:
                raise RecallError(
                    422,
                    f"none of the {len(request.history)} ids has a pretrained vector "
                    f"in model {snapshot.fingerprint}'s items",
                    "history",
                )
            exclude = set(request.history) if request.exclude_seen else set()
            extra = {"history": len(request.history), "unknown_history": len(unknown)}
            if unknown:
                self.metrics.unknown_ids(len(unknown))
        elif request.user_vector is not None:
            vector = np.asarray(request.user_vector, np.float32)
            if len(vector) != snapshot.model.config.user_dim:
                raise RecallError(
                    422,
                    f"has {len(vector)} values; model {snapshot.fingerprint} takes "
                    f"{snapshot.model.config.user_dim}",
                    "user_vector",
                )
        else:
            vector = self._user_vector(snapshot, request.user_id)
        items = top_k(snapshot, vector, request.k, exclude)
        return {"items": items, "model": snapshot.fingerprint, "version": snapshot.version, **extra}

    def _history_vector(
        self, snapshot: Snapshot, history: list[str]
    ) -> tuple[np.ndarray | None, list[str]]:
        if snapshot.item_vectors is not None:  # local artifacts, or the version in memory
            return user_vector(
                snapshot.item_vectors, history, last_n=self.last_n, index=snapshot.item_rows
            )
        found = self._requests.item_vectors_for(history, snapshot.version)
        if not found.ids:
            return None, found.unknown
        # the same weighting as `user_vector`: unknown ids dropped first, then the last n
        weights = history_weights(len(found.ids), self.last_n, None).astype(np.float32)
        return weights @ found.vectors, found.unknown

    def _user_vector(self, snapshot: Snapshot, user_id: str) -> np.ndarray:
        if snapshot.version is None:
            if snapshot.user_rows is None:
                raise RecallError(
                    422, "lookups need user vectors (serve --user-vectors)", "user_id"
                )
            row = snapshot.user_rows.get(user_id)
            vector = snapshot.user_vectors.vectors[row] if row is not None else None
        else:
            if not snapshot.store_users:
                raise RecallError(
                    422,
                    f"store version {snapshot.version} was published without user vectors",
                    "user_id",
                )
            vector = self._requests.user_vector(user_id, snapshot.version)
        if vector is None:
            raise RecallError(404, f"user {user_id!r} has no pretrained vector", "user_id")
        return vector
