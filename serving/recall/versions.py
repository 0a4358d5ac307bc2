"""Which pushed version the recall service serves, re-checked on every poll.

A version is servable when all of its parts are present and answer: the user tower (TF
Serving answers for that exact version, with the bias the items were published with), the
ANN index and item embeddings on disk and, with Redis, a kept store version of that push.
Every poll first probes the served version — `/health/ready` turns 503, with the reason, the
poll after its user tower stops answering — then walks the choices, preferred first:

    with Redis   the store's `current`, then its other kept versions, newest first
    without      the pin file's version (a rollback), else the complete versions, newest first

and serves the first that is servable: the newest wanted version once it answers, the
previous one while it does not, another kept one when the served version goes away. A switch
swaps one snapshot reference, so a request never mixes parts of two versions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.recall.artifacts import complete_versions, pushed_user_tower
from serving.recall.metrics import Metrics
from serving.recall.snapshot import Snapshot, load_snapshot

log = logging.getLogger("serving.recall")

BIAS_TOLERANCE = 1e-5
RETRY_FAILED_LOAD_S = 10.0  # a version that failed to load is tried again after this
MAX_CHOICES = 4  # versions looked at per poll: bounds a poll's time when several fail

Key = tuple[int, str | None]  # (pushed version, store version or None without Redis)


def mismatch(snapshot: Snapshot, out: Any) -> str | None:
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


def public_reason(error: BaseException) -> str:
    """What a client may read about a dependency's failure: its kind, never its address."""
    code = getattr(error, "code", None)
    return getattr(code, "name", None) or type(error).__name__


class VersionFollower:
    """The served snapshot and why it is (not) ready; `refresh()` is one poll."""

    def __init__(
        self,
        output_dir: Path,
        tower: Any,
        metrics: Metrics,
        *,
        serving_dir: Path | None,
        watcher: Any | None,
        timeout_s: float,
        on_switch: Any | None = None,
    ) -> None:
        self.output_dir, self.tower, self.metrics = output_dir, tower, metrics
        self.serving_dir, self.watcher, self.timeout_s = serving_dir, watcher, timeout_s
        self.on_switch = on_switch  # called with each snapshot as it becomes the served one
        self.snapshot: Snapshot | None = None
        self.served_problem: str | None = None  # the served version stopped answering
        self.pending: str | None = None  # why a preferred version is not served
        self.redis_problem: str | None = None
        self._loaded: dict[Key, Snapshot] = {}
        self._failed: dict[Key, float] = {}  # key -> when its load failed

    # -- one poll ------------------------------------------------------------------------------

    def refresh(self) -> None:
        served = self.snapshot
        if served is not None:
            problem = self.probe(served)
            if problem != self.served_problem and problem is not None:
                log.warning("served version %d: %s", served.version, problem)
            self.served_problem = problem
            self.metrics.ready.set(int(problem is None))
        choices = self._choices()
        if choices is None:  # Redis unreachable: keep what is served, probed above
            return
        if not choices and served is None:
            self.pending = "nothing is published yet"
        self._forget(choices)
        skipped: list[str] = []
        for key in choices:
            if served is not None and key == (served.version, served.store_version):
                if self.served_problem is None:
                    break  # nothing preferred answers: the served one stays
                continue
            candidate, problem = self._load(key, served)
            if candidate is not None:
                problem = self.probe(candidate)
            if problem is None:
                self._switch(candidate, served)
                break
            skipped.append(problem)
        self._note_pending(skipped[0] if skipped else None)

    def _note_pending(self, problem: str | None) -> None:
        if problem is not None and problem != self.pending:
            log.warning("%s", problem)
        self.pending = problem

    def _choices(self) -> list[Key] | None:
        """The versions to serve, preferred first; None when Redis cannot say."""
        if self.watcher is None:
            from serving.store import read_pin

            pinned = read_pin(self.serving_dir)
            if pinned is not None:
                return [(pinned, None)]
            return [(v, None) for v in reversed(complete_versions(self.output_dir))][:MAX_CHOICES]
        from serving.store import StoreUnavailable, VersionNotFound, pushed_version_of

        try:
            current = self.watcher.current_version()
            kept = [current] if current else []
            kept += [v for v in self.watcher.versions() if v != current]
            choices: list[Key] = []
            for store_version in kept[:MAX_CHOICES]:
                try:
                    source = self.watcher.manifest(store_version).get("source", {})
                except VersionNotFound:
                    continue  # pruned since it was listed
                pushed = source.get("pushed_version", pushed_version_of(store_version))
                if pushed is not None and all(p != int(pushed) for p, _ in choices):
                    choices.append((int(pushed), store_version))
        except StoreUnavailable as error:
            if self.redis_problem is None:
                log.warning("%s", error)  # the address goes to the log, not to clients
            self.redis_problem = "the item store (Redis) is unreachable"
            self.metrics.error("store_unavailable")
            return None
        if self.redis_problem is not None:
            log.info("Redis answers again")
        self.redis_problem = None
        return choices

    def _forget(self, choices: list[Key]) -> None:
        """Drop loaded candidates that are no longer a choice (their memory goes back)."""
        for key in [k for k in self._loaded if k not in choices]:
            del self._loaded[key]

    def _load(self, key: Key, served: Snapshot | None) -> tuple[Snapshot | None, str | None]:
        if key in self._loaded:
            return self._loaded[key], None
        if served is not None and served.version == key[0]:
            # the same push republished to the store (e.g. after Redis came back empty): the
            # items on disk are the same, only the store version pinned for histories changes
            return dataclasses.replace(served, store_version=key[1]), None
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() < failed + RETRY_FAILED_LOAD_S:
            return None, f"version {key[0]} not loaded (retrying)"
        try:
            snapshot = load_snapshot(self.output_dir, *key)
        except Exception as error:  # a bad version must not stop the watcher: report it
            self._failed[key] = time.monotonic()
            self.metrics.error("load_failed")
            log.error("version %d not loaded: %s", key[0], error)
            return None, f"version {key[0]} not loaded: {type(error).__name__}"
        self._failed.pop(key, None)
        self._loaded[key] = snapshot
        return snapshot, None

    def probe(self, snapshot: Snapshot) -> str | None:
        """None when TF Serving answers for this version's user tower with its bias."""
        pushed = self.serving_dir and pushed_user_tower(self.serving_dir, snapshot.version)
        if pushed and not pushed.exists():
            return f"version {snapshot.version} has no pushed user tower"
        zeros = np.zeros((1, snapshot.user_dim), np.float32)
        try:
            out = self.tower.embed(zeros, version=snapshot.version)
        except Exception as error:  # the client's own errors say what failed: logged
            log.debug("probe of version %d: %s", snapshot.version, error)
            return (
                f"version {snapshot.version}'s items are loaded but its user tower is not "
                f"served ({public_reason(error)})"
            )
        return mismatch(snapshot, out)

    def _switch(self, candidate: Snapshot, served: Snapshot | None) -> None:
        if self.on_switch is not None:
            self.on_switch(candidate)
        self.snapshot, self.served_problem = candidate, None
        self._loaded.pop((candidate.version, candidate.store_version), None)
        self.metrics.switches.inc()
        self.metrics.version.set(candidate.version)
        self.metrics.items.set(len(candidate.ids))
        self.metrics.ready.set(1)
        log.info(
            "serving version %d (%d items, %s index%s; was %s)",
            candidate.version,
            len(candidate.ids),
            candidate.backend,
            f", store {candidate.store_version}" if candidate.store_version else "",
            served.version if served else None,
        )

    # -- what /health/ready says ---------------------------------------------------------------

    def ready(self) -> tuple[bool, str | None]:
        """(ready, why not): a version is served and its user tower answered at the last poll."""
        if self.snapshot is None:
            return False, self.redis_problem or self.pending or "starting"
        if self.served_problem is not None:
            return False, f"version {self.snapshot.version} stopped answering: " + (
                self.served_problem
            )
        return True, None
