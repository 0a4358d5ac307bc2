"""The recall service's logic: which version is served, and one request's answer.

    user_vector [U]  or  history (item ids, oldest -> newest) -> mean of the last N items'
    pretrained vectors -> user tower over gRPC, pinned to the served version -> query [64],
    bias -> ANN shortlist of that version, re-ranked exactly -> top n (logit, probability)

Versions: a watcher thread looks every `poll_s` for the version to serve — with Redis the
store's current version (`finetower:current`; the pushed version it holds names the local
index), else the newest complete `<output_dir>/ann_index/<v>`. It loads that version's index
and embeddings while the old snapshot keeps answering, checks that TF Serving answers for
user tower version v with the bias the index was published with, and only then swaps the one
snapshot reference: a request never mixes a user tower of one version with items of another.
A version whose user tower is not served yet waits (the old one stays); with none served
the service answers 503 and says why.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.common.user_vectors import DEFAULT_LAST_N, history_weights
from components.embeddings_publisher.publishing import pushed_version_of
from serving.recall.metrics import Metrics
from serving.recall.snapshot import Snapshot, complete_versions, load_snapshot, top_items

log = logging.getLogger("serving.recall")

DEFAULT_POLL_S = 1.0
DEFAULT_TIMEOUT_S = 1.0
BIAS_TOLERANCE = 1e-5
RETRY_FAILED_LOAD_S = 10.0  # a version that failed to load is tried again after this


class RecallError(Exception):
    """What the client sees: an HTTP status and a message naming `field` where it is one."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field

    def body(self) -> dict[str, Any]:
        prefix = f"{self.field}: " if self.field else ""
        return {"error": prefix + str(self), "field": self.field}


class RecallService:
    """Holds the served snapshot, follows new versions, answers recall requests.

    `tower` is a `serving.client.UserTowerClient` (or anything with its `embed`);
    `redis_url` makes the store's current version the one served and history vectors come
    from it, pinned to that version.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tower: Any,
        *,
        serving_dir: str | Path | None = None,
        redis_url: str | None = None,
        last_n: int = DEFAULT_LAST_N,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        self.output_dir = Path(output_dir)
        self.serving_dir = Path(serving_dir) if serving_dir is not None else None
        self.tower, self.redis_url = tower, redis_url
        self.last_n, self.poll_s, self.timeout_s = last_n, max(0.05, poll_s), timeout_s
        self.metrics = Metrics()
        self._snapshot: Snapshot | None = None
        self._candidate: Snapshot | None = None  # loaded, waiting for its user tower
        self._failed: tuple[tuple[int, str | None], float] | None = None  # (wanted, when)
        self._problem: str | None = None  # why the wanted version is not (yet) served
        self._redis_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests = self._watcher = None
        if redis_url is not None:
            from serving.store import StoreReader

            timeouts = dict(connect_timeout=timeout_s, read_timeout=timeout_s)
            # two clients: the watcher's manifest cache never races the requests'
            self._requests = StoreReader(redis_url, **timeouts)
            self._watcher = StoreReader(redis_url, **timeouts)

    # -- following versions --------------------------------------------------------------------

    def _wanted(self) -> tuple[int, str | None] | None:
        """(pushed version, store version) to serve now, or None when there is none."""
        if self._watcher is None:
            versions = complete_versions(self.output_dir)
            return (versions[-1], None) if versions else None
        from serving.store import StoreUnavailable

        try:
            current = self._watcher.current_version()
            if current is None:
                self._redis_problem = None
                return None
            source = self._watcher.manifest(current).get("source", {})
        except StoreUnavailable as error:
            if self._redis_problem is None:
                log.warning("%s", error)
            self._redis_problem = str(error)
            self.metrics.error("store_unavailable")
            return None
        if self._redis_problem is not None:
            log.info("Redis answers again")
        self._redis_problem = None
        version = source.get("pushed_version", pushed_version_of(current))
        if version is None:
            self._problem = f"store version {current} is not a pushed version's (no pushed_version)"
            return None
        return int(version), current

    def refresh(self) -> None:
        """One look for the version to serve; load, check and switch to it if it is new."""
        wanted = self._wanted()
        served = self._snapshot
        if wanted is None:
            if served is None and self._problem is None and self._redis_problem is None:
                self._problem = "nothing is published yet"
            return
        if served is not None and (served.version, served.store_version) == wanted:
            self._problem = None
            return
        candidate = self._candidate
        if served is not None and served.version == wanted[0]:
            # the same push republished to the store (e.g. after Redis came back empty): the
            # items on disk are the same, only the store version pinned for histories changes
            candidate = dataclasses.replace(served, store_version=wanted[1])
        if candidate is None or (candidate.version, candidate.store_version) != wanted:
            failed = self._failed
            if (
                failed
                and failed[0] == wanted
                and time.monotonic() < failed[1] + RETRY_FAILED_LOAD_S
            ):
                return
            try:
                candidate = load_snapshot(self.output_dir, *wanted)
            except Exception as error:  # a bad version must not stop the watcher: report it
                self._failed = (wanted, time.monotonic())
                self._problem = f"version {wanted[0]} not loaded: {error}"
                self.metrics.error("load_failed")
                log.error("%s", self._problem)
                return
            self._candidate, self._failed = candidate, None
        problem = self._check_tower(candidate)
        if problem is not None:
            if problem != self._problem:
                log.warning("%s", problem)
            self._problem = problem
            return
        self._snapshot, self._candidate, self._problem = candidate, None, None
        self.metrics.switches.inc()
        self.metrics.version.set(candidate.version)
        self.metrics.items.set(len(candidate.ids))
        log.info(
            "serving version %d (%d items, %s index%s; was %s)",
            candidate.version,
            len(candidate.ids),
            candidate.backend,
            f", store {candidate.store_version}" if candidate.store_version else "",
            served.version if served else None,
        )

    def _check_tower(self, snapshot: Snapshot) -> str | None:
        """None when TF Serving answers for this version's user tower with its bias."""
        if self.serving_dir is not None:
            pushed = self.serving_dir / "user_tower" / str(snapshot.version) / "saved_model.pb"
            if not pushed.exists():
                return f"version {snapshot.version} has no pushed user tower ({pushed} is missing)"
        probe = np.zeros((1, snapshot.user_dim), np.float32)
        try:
            out = self.tower.embed(probe, version=snapshot.version)
        except Exception as error:  # the client's own errors say what failed
            return (
                f"version {snapshot.version}'s items are loaded but its user tower is not "
                f"served: {error}"
            )
        return _mismatch(snapshot, out)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:  # keep watching whatever one look raised
                self._problem = f"watcher: {error}"
                log.exception("watcher")
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        if self._thread is None:
            self.refresh()  # a version on disk is served from the first request
            self._thread = threading.Thread(target=self._watch, name="recall-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 4 * self.timeout_s + 5)
        for reader in (self._requests, self._watcher):
            if reader is not None:
                reader.close()

    # -- answering -----------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def health(self) -> tuple[bool, dict[str, Any]]:
        snapshot = self._snapshot
        ready = snapshot is not None
        reason = None if ready else (self._redis_problem or self._problem or "starting")
        self.metrics.ready.set(int(ready))
        body: dict[str, Any] = {
            "ready": ready,
            "reason": reason,
            "version": snapshot.version if snapshot else None,
            "versions": {
                "user_tower": snapshot.version if snapshot else None,
                "item_embeddings": snapshot.version if snapshot else None,
                "store": snapshot.store_version if snapshot else None,
            },
            "items": len(snapshot.ids) if snapshot else 0,
            "backend": snapshot.backend if snapshot else None,
            "ann_recall_at_100": snapshot.manifest.get("ann_recall") if snapshot else None,
            "pending": self._problem if ready else None,
        }
        if self.redis_url is not None:
            body["redis"] = "unreachable" if self._redis_problem else "ok"
            if self._redis_problem:
                body["redis_problem"] = self._redis_problem
        return ready, body

    def recall(
        self,
        *,
        user_vector: list[float] | None = None,
        history: list[str] | None = None,
        n: int = 10,
        exclude_seen: bool = False,
    ) -> dict[str, Any]:
        """The answer to one request; raises `RecallError` for what the client should see."""
        snapshot = self._snapshot  # taken once: this request answers from this version
        if snapshot is None:
            raise RecallError(503, self.health()[1]["reason"])
        extra: dict[str, Any] = {}
        exclude: frozenset[str] = frozenset()
        if history is not None:
            vector, unknown = self._history_vector(snapshot, history)
            extra = {"history": len(history), "unknown_history": len(unknown)}
            if unknown:
                self.metrics.unknown_history.inc(len(unknown))
            if exclude_seen:
                exclude = frozenset(h for h in history if h in snapshot.row_of)
        else:
            vector = np.asarray(user_vector, np.float32)
            if len(vector) != snapshot.user_dim:
                raise RecallError(
                    422,
                    f"has {len(vector)} values; version {snapshot.version}'s user tower takes "
                    f"{snapshot.user_dim}",
                    "user_vector",
                )
        out = self._embed(snapshot, vector)
        bias = float(np.ravel(out.bias)[0])
        if not np.isfinite(out.query).all():
            field = "history" if history is not None else "user_vector"
            raise RecallError(
                422, "the user tower's output is not finite (values too large)", field
            )
        items = top_items(snapshot, np.asarray(out.query)[0], bias, n, exclude)
        return {"items": items, "version": snapshot.version, **extra}

    def _embed(self, snapshot: Snapshot, vector: np.ndarray):
        from serving.client import ServingClientError

        try:
            out = self.tower.embed(vector.reshape(1, -1), version=snapshot.version)
        except ServingClientError as error:
            self.metrics.error("tower_unavailable")
            raise RecallError(
                503, f"user tower version {snapshot.version} did not answer: {error}"
            ) from None
        mismatch = _mismatch(snapshot, out)
        if mismatch is not None:
            self.metrics.error("version_mismatch")
            raise RecallError(503, mismatch)
        return out

    def _history_vector(self, snapshot: Snapshot, history: list[str]) -> tuple[np.ndarray, list]:
        """The mean of the last `last_n` known history items' pretrained vectors."""
        if snapshot.store_version is not None:
            from serving.store import StoreError, StoreUnavailable, VersionNotFound

            try:
                found = self._requests.item_vectors_for(history, snapshot.store_version)
            except StoreUnavailable as error:
                self.metrics.error("store_unavailable")
                raise RecallError(503, str(error)) from None
            except VersionNotFound as error:
                self.metrics.error("version_gone")
                raise RecallError(
                    503, f"store version {snapshot.store_version} is gone: {error}"
                ) from None
            except StoreError as error:
                self.metrics.error("store_error")
                raise RecallError(502, str(error)) from None
            known, vectors, unknown = found.ids, found.vectors, found.unknown
        else:
            if snapshot.item_vectors is None:
                raise RecallError(
                    422, f"version {snapshot.version} has no pretrained item vectors", "history"
                )
            rows = [snapshot.row_of.get(item) for item in history]
            known = [r for r in rows if r is not None]
            unknown = [item for item, r in zip(history, rows, strict=True) if r is None]
            vectors = np.asarray(snapshot.item_vectors[np.asarray(known, np.int64)])
        if not known:
            raise RecallError(
                422,
                f"none of the {len(history)} ids has a pretrained vector in version "
                f"{snapshot.version}'s items",
                "history",
            )
        weights = history_weights(len(known), self.last_n, None).astype(np.float32)
        return weights @ vectors, unknown


def _mismatch(snapshot: Snapshot, out: Any) -> str | None:
    """Why a user tower answer does not belong with this snapshot's items, or None."""
    served = int(out.served_version)
    if served != snapshot.version:
        return (
            f"the user tower answered as version {served} but the item embeddings are version "
            f"{snapshot.version}: refusing to mix versions"
        )
    bias = float(np.ravel(out.bias)[0])
    if not math.isclose(bias, snapshot.bias, rel_tol=BIAS_TOLERANCE, abs_tol=BIAS_TOLERANCE):
        return (
            f"user tower version {served} has bias {bias}, the items of version "
            f"{snapshot.version} were published with {snapshot.bias}: not the same model"
        )
    return None
