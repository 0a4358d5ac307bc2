"""A sample of the user vectors the recall service feeds its user tower, logged for the
pipeline's training/serving skew check (`components/validation/skew.py`).

    <folder>/serving-<start>-<seq>-v<version>.csv     header u1..uD, one user vector a row
                                                      (components/common/serving_log.py)

Never on a request's path to the disk: `offer()` samples (seeded, `rate` of the vectors) and
hands the row to a bounded queue; a background thread writes. When the queue is full the row
is dropped and counted (a slow disk costs samples, never latency). Each file is written whole
or not at all (a temporary sibling renamed into place), holds at most `rows_per_file` rows of
one version (a version switch starts a new file: the vectors' size may change with it), is
written at the latest `flush_s` after its first row, and only the newest `max_files` are kept.
CSV with a header is what TFDV reads as it is (`tfdv.generate_statistics_from_csv`); the
column names are the training vectors' dimensions as the skew check names them.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.serving_log import column_names, log_file_name, log_files

__all__ = ["LogSettings", "ServingLog", "column_names", "log_files", "write_log_file"]

log = logging.getLogger("serving.recall")

DEFAULT_RATE = 0.01
DEFAULT_ROWS_PER_FILE = 10_000
DEFAULT_MAX_FILES = 100
DEFAULT_QUEUE_ROWS = 10_000
DEFAULT_FLUSH_S = 60.0
POLL_S = 0.2  # the writer's wait for a row: how late a due file or a stop is noticed


@dataclass(frozen=True)
class LogSettings:
    """Where and how much to log (the service's `--serving_log*` flags)."""

    folder: str
    rate: float = DEFAULT_RATE
    seed: int = 0
    rows_per_file: int = DEFAULT_ROWS_PER_FILE
    max_files: int = DEFAULT_MAX_FILES
    queue_rows: int = DEFAULT_QUEUE_ROWS
    flush_s: float = DEFAULT_FLUSH_S

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError(f"serving_log_rate must be in (0, 1], got {self.rate}")
        for name in ("rows_per_file", "max_files", "queue_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"serving_log {name} must be >= 1, got {getattr(self, name)}")
        if self.flush_s <= 0:
            raise ValueError(f"serving_log flush_s must be > 0, got {self.flush_s}")


class ServingLog:
    """`offer(version, vector)` from any request thread; `start()`/`stop()` the writer.

    `sampled`, `dropped` and `written` count rows (the service exports them as metrics).
    """

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        self.folder = Path(settings.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()  # the sampler's sequence: one draw per offer, in order
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_rows)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.sampled = self.dropped = self.written = self.files = 0
        self._run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"

    # -- the request side ------------------------------------------------------------------

    def offer(self, version: int, vector: np.ndarray) -> bool:
        """Sample `vector [D]` (served by `version`) into the log; True when queued."""
        with self._lock:
            if self._rng.random() >= self.settings.rate:
                return False
            self.sampled += 1
        try:
            self._queue.put_nowait((int(version), np.asarray(vector, np.float32).copy()))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        return True

    # -- the writer --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name="serving-log", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then end the writer."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _write_loop(self) -> None:
        rows: list[np.ndarray] = []  # the file being filled: one version, one vector size
        version, opened = None, 0.0
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                item = None
            if item is not None:
                if rows and (item[0] != version or len(item[1]) != len(rows[0])):
                    rows = self._flush(version, rows)
                if not rows:
                    version, opened = item[0], time.monotonic()
                rows.append(item[1])
            full = len(rows) >= self.settings.rows_per_file
            if rows and (full or time.monotonic() >= opened + self.settings.flush_s):
                rows = self._flush(version, rows)
            if item is None and self._stopping.is_set():
                if rows:
                    self._flush(version, rows)
                return

    def _flush(self, version: int, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Write `rows` as one file; return a new, empty list for the next."""
        try:
            path = write_log_file(self.folder, f"{self._run}-{self.files:06d}", version, rows)
        except OSError as error:  # a full or lost disk costs these rows, not the service
            log.warning("serving log: %d rows not written: %s", len(rows), error)
            with self._lock:
                self.dropped += len(rows)
            return []
        self.files += 1
        self.written += len(rows)
        log.debug("serving log: %s (%d rows)", path, len(rows))
        prune_log_files(self.folder, self.settings.max_files)
        return []


def write_log_file(folder: Path, stem: str, version: int, rows: list[np.ndarray]) -> Path:
    """One CSV file of `rows` (each [D]), whole or not at all: written to a hidden temporary
    sibling (no reader's glob matches it), then renamed into place."""
    matrix = np.stack(rows).astype(np.float32)
    final = folder / log_file_name(stem, version)
    temporary = folder / f".{final.name}.tmp"
    try:
        with temporary.open("w") as f:
            f.write(",".join(column_names(matrix.shape[1])) + "\n")
            np.savetxt(f, matrix, delimiter=",", fmt="%.9g")
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def prune_log_files(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` log files; return those deleted."""
    files = log_files(folder)
    gone = files[: max(0, len(files) - keep)]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
