"""The recall service's logic: one request's answer, within one deadline.

    user_vector [U]  or  history (item ids, oldest -> newest) -> mean of the last N items'
    pretrained vectors -> user tower over gRPC, pinned to the served version -> query [64],
    bias -> ANN shortlist of that version, re-ranked exactly -> top n (logit, probability)

A history is averaged with the served version's recipe (its last N, half-life and pretrained
vectors, recorded when it was published): a switch to a version trained with another N
changes the averaging with the snapshot, in one swap. `last_n` (`--history_last_n`) serves
versions published before recipes were recorded; where a version records another N the
version wins and the disagreement is logged once per version (a flag must not silently
serve vectors the model never saw). With a `serving_log`, a seeded sample of the user vectors
sent to the tower is logged for the pipeline's skew check (`skew_log`).

Which version is served, and whether it is ready, is `versions.VersionFollower`'s: a watcher
thread calls its `refresh()` every `poll_s`. A request takes the served snapshot once and
answers from it to its end. Each request has one deadline, stamped when it arrived: queueing,
the Redis lookup and the gRPC call (which gets what is left) all spend the same `timeout_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.common.user_vectors import DEFAULT_LAST_N, UserVectorRecipe
from serving.recall.metrics import Metrics
from serving.recall.skew_log import ServingLog
from serving.recall.snapshot import ShortListError, Snapshot, top_items
from serving.recall.versions import VersionFollower, mismatch, public_reason

log = logging.getLogger("serving.recall")

DEFAULT_POLL_S = 1.0
DEFAULT_TIMEOUT_S = 1.0
# The pretrained vectors the towers were trained on are unit-scale (|x| < ~10). 1e4 leaves
# room for any real vector while every product and square the towers and faiss compute stays
# far inside float32 (1e19 or 1e38 overflowed and came back as empty or arbitrary lists).
MAX_ABS_VALUE = 1e4


class RecallError(Exception):
    """What the client sees: an HTTP status and a message naming `field` where it is one."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field

    def body(self) -> dict[str, Any]:
        prefix = f"{self.field}: " if self.field else ""
        return {"error": prefix + str(self), "field": self.field}


class RecallService:
    """Answers recall requests from the snapshot its `VersionFollower` serves.

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
        last_n: int | None = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        serving_log: ServingLog | None = None,
    ) -> None:
        if last_n is not None and last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.tower, self.redis_url = tower, redis_url
        self.last_n, self.poll_s, self.timeout_s = last_n, max(0.05, poll_s), timeout_s
        self.metrics = Metrics()
        self.serving_log = serving_log
        if serving_log is not None:
            self.metrics.watch_serving_log(serving_log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests = watcher = None
        if redis_url is not None:
            from serving.store import StoreReader

            timeouts = dict(connect_timeout=timeout_s, read_timeout=timeout_s)
            # two clients: the watcher's manifest cache never races the requests'
            self._requests = StoreReader(redis_url, **timeouts)
            watcher = StoreReader(redis_url, **timeouts)
        self.versions = VersionFollower(
            Path(output_dir),
            tower,
            self.metrics,
            serving_dir=Path(serving_dir) if serving_dir is not None else None,
            watcher=watcher,
            timeout_s=timeout_s,
            on_switch=self._check_recipe,
        )

    # -- the user-vector recipe ----------------------------------------------------------------

    def recipe(self, snapshot: Snapshot) -> UserVectorRecipe:
        """How `snapshot`'s histories are averaged: its recorded recipe, else `last_n`."""
        if snapshot.recipe is not None:
            return snapshot.recipe
        return UserVectorRecipe(last_n=self.last_n or DEFAULT_LAST_N, dim=snapshot.user_dim)

    def _check_recipe(self, snapshot: Snapshot) -> None:
        """Log, when a version is served, which recipe it uses and where the flag disagrees."""
        recipe = self.recipe(snapshot)
        if snapshot.recipe is None:
            log.warning(
                "version %d records no user vector recipe: histories are the %s (--history_last_n)",
                snapshot.version,
                recipe.describe(),
            )
        elif self.last_n is not None and self.last_n != recipe.last_n:
            log.warning(
                "--history_last_n %d disagrees with version %d, trained on the %s: the "
                "version's recipe is used",
                self.last_n,
                snapshot.version,
                recipe.describe(),
            )
        else:
            log.info("version %d: histories are the %s", snapshot.version, recipe.describe())

    # -- following versions --------------------------------------------------------------------

    def refresh(self) -> None:
        """One poll: re-check the served version, switch to a better one if it answers."""
        self.versions.refresh()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # keep watching whatever one look raised
                self.versions.pending = "watcher failed (see the log)"
                log.exception("watcher")
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        if self.serving_log is not None:
            self.serving_log.start()
        if self._thread is None:
            self.refresh()  # a version on disk is served from the first request
            self._thread = threading.Thread(target=self._watch, name="recall-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 4 * self.timeout_s + 5)
        for reader in (self._requests, self.versions.watcher):
            if reader is not None:
                reader.close()
        if self.serving_log is not None:
            self.serving_log.stop()

    # -- answering -----------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self.versions.snapshot

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body) for /health/ready: ready = a version is served and its user tower
        answered at the last poll (its index and store version are loaded with it)."""
        snapshot = self.versions.snapshot
        ready, reason = self.versions.ready()
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
            "pending": self.versions.pending if snapshot else None,
            "user_vector_recipe": self.recipe(snapshot).to_dict() if snapshot else None,
        }
        if self.redis_url is not None:
            body["redis"] = "unreachable" if self.versions.redis_problem else "ok"
            if self.versions.redis_problem:
                body["redis_problem"] = self.versions.redis_problem
        return ready, body

    def recall(
        self,
        *,
        user_vector: list[float] | None = None,
        history: list[str] | None = None,
        n: int = 10,
        exclude_seen: bool = False,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """The answer to one request; raises `RecallError` for what the client should see.
        `deadline` (time.monotonic()) is when the answer is due: arrival + timeout_s."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        snapshot = self.versions.snapshot  # taken once: this request answers from this version
        if snapshot is None:
            raise RecallError(503, self.health()[1]["reason"])
        field = "history" if history is not None else "user_vector"
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
            vector = _checked_user_vector(user_vector, snapshot)
        if self.serving_log is not None:
            self.serving_log.offer(snapshot.version, vector)  # a queue put, never disk I/O
        out = self._embed(snapshot, vector, deadline)
        query = np.asarray(out.query, np.float64)[0]
        if not np.isfinite(query).all():
            raise RecallError(
                422, "the user tower's output is not finite (values too large)", field
            )
        bias = float(np.ravel(out.bias)[0])
        try:
            items = top_items(snapshot, query, bias, n, exclude)
        except ShortListError as error:
            self.metrics.error("short_list")
            log.error("%s", error)
            raise RecallError(500, f"{error}: refusing to answer a short list") from None
        answer = {"items": items, "version": snapshot.version, "ranked": bool(query.any()), **extra}
        if not answer["ranked"]:
            # every item scores the bias: any order is as good as another, so say so
            answer["warning"] = (
                f"the user tower maps this {field} to a zero query: every item scores the "
                "bias, the order is arbitrary"
            )
        return answer

    def _embed(self, snapshot: Snapshot, vector: np.ndarray, deadline: float):
        from serving.client import ServingClientError

        if time.monotonic() >= deadline:
            self.metrics.error("deadline")
            raise RecallError(503, "the request's deadline passed before the user tower was called")
        try:
            out = self.tower.embed(
                vector.reshape(1, -1), version=snapshot.version, deadline=deadline
            )
        except ServingClientError as error:
            self.metrics.error("tower_unavailable")
            log.warning("user tower version %d: %s", snapshot.version, error)
            raise RecallError(
                503,
                f"user tower version {snapshot.version} did not answer ({public_reason(error)})",
            ) from None
        problem = mismatch(snapshot, out)
        if problem is not None:
            self.metrics.error("version_mismatch")
            raise RecallError(503, problem)
        return out

    def _history_vector(self, snapshot: Snapshot, history: list[str]) -> tuple[np.ndarray, list]:
        """The known history items' pretrained vectors averaged by the version's recipe."""
        if snapshot.store_version is not None:
            from serving.store import StoreError, StoreUnavailable, VersionNotFound

            try:
                found = self._requests.item_vectors_for(history, snapshot.store_version)
            except StoreUnavailable as error:
                self.metrics.error("store_unavailable")
                log.warning("%s", error)  # names the server: for the log only
                raise RecallError(503, "the item store (Redis) did not answer") from None
            except VersionNotFound:
                self.metrics.error("version_gone")
                raise RecallError(
                    503, f"store version {snapshot.store_version} is gone from the item store"
                ) from None
            except StoreError as error:
                self.metrics.error("store_error")
                log.error("%s", error)
                raise RecallError(502, "the item store (Redis) refused the lookup") from None
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
        weights = self.recipe(snapshot).weights(len(known)).astype(np.float32)
        return weights @ vectors, unknown


def _checked_user_vector(user_vector: list[float] | None, snapshot: Snapshot) -> np.ndarray:
    """float32 [U], or 422 naming the field: the size the tower takes, |x| <= MAX_ABS_VALUE."""
    vector = np.asarray(user_vector, np.float64)
    if len(vector) != snapshot.user_dim:
        raise RecallError(
            422,
            f"has {len(vector)} values; version {snapshot.version}'s user tower takes "
            f"{snapshot.user_dim}",
            "user_vector",
        )
    outside = np.flatnonzero(~(np.abs(vector) <= MAX_ABS_VALUE))
    if len(outside):
        first = int(outside[0])
        raise RecallError(
            422,
            f"value {vector[first]:g} at index {first} is outside [-{MAX_ABS_VALUE:g}, "
            f"{MAX_ABS_VALUE:g}] ({len(outside)} such values): the towers cannot score it",
            f"user_vector.{first}",
        )
    return vector.astype(np.float32)
