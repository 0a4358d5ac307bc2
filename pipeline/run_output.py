"""The local runner's console: one line per component as it finishes, the logs in a file.

TensorFlow's C++ core, absl, Beam, Keras' `fit` and Python warnings all write to the process's
stdout and stderr file descriptors, from Python and from C++ alike, so they are caught there:
`RunConsole` points descriptors 1 and 2 at `<output_dir>/logs/run-<time>.log` (with
`verbose`, at a pipe whose every byte is copied to that file and to the terminal) and keeps
duplicates of the original descriptors for the runner's own lines. Beam's worker processes
inherit the redirected descriptors, so their logs land in the same file.

`ComponentProgress` is a logging handler on absl's logger: TFX's LocalDagRunner logs
"Component %s is running." and "Component %s is finished." around each node (tfx 1.21,
tfx/orchestration/local/local_dag_runner.py); on "finished" it reads the node's latest
execution from ML Metadata (ran or cached) and prints one line with a key figure.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TextIO

from pipeline import component_figures

# LocalDagRunner's messages around each node (absl logging, INFO)
RUNNING_MESSAGE = "Component %s is running."
FINISHED_MESSAGE = "Component %s is finished."
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_path(output_dir: str, now: float | None = None) -> str:
    """`<output_dir>/logs/run-<UTC time>.log`; a local temporary folder when the output dir
    is remote (descriptors need a local file)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    folder = os.path.join(output_dir, "logs")
    if "://" in output_dir:
        folder = tempfile.mkdtemp(prefix="finetower-logs-")
    return os.path.join(folder, f"run-{stamp}.log")


class RunConsole:
    """Within `with`: descriptors 1 and 2 write to the log file (and, verbose, also to the
    terminal); `out` and `err` are the terminal's stdout and stderr."""

    def __init__(self, path: str, verbose: bool = False):
        self.path = path
        self.verbose = verbose
        self.out: TextIO = io.StringIO()
        self.err: TextIO = io.StringIO()
        self._saved: list[int] = []
        self._log_fd = -1
        self._pipe_write = -1
        self._copier: threading.Thread | None = None

    def __enter__(self) -> RunConsole:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved = [os.dup(1), os.dup(2)]
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        self.err = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        self._log_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        target = self._log_fd
        if self.verbose:
            read_end, self._pipe_write = os.pipe()
            self._copier = threading.Thread(
                target=_copy, args=(read_end, [self._log_fd, self._saved[1]]), daemon=True
            )
            self._copier.start()
            target = self._pipe_write
        os.dup2(target, 1)
        os.dup2(target, 2)
        return self

    def __exit__(self, *exc) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        if self._copier is not None:
            os.close(self._pipe_write)
            self._copier.join(timeout=5)
            if self._copier.is_alive():
                # a Beam worker still holds the pipe: the copier keeps the descriptors it
                # writes to until the worker exits (the process is about to end)
                self.out.close()
                self.err.close()
                return
        for fd in (*self._saved, self._log_fd):
            os.close(fd)
        self.out.close()
        self.err.close()


def _copy(read_end: int, targets: list[int]) -> None:
    """Copy every byte from the pipe to each target descriptor until the pipe closes."""
    while chunk := os.read(read_end, 65536):
        for fd in targets:
            os.write(fd, chunk)
    os.close(read_end)


def progress_line(node_id: str, state: str, seconds: float, figure: str) -> str:
    """`  Trainer                        ran      12.3 s  val AUC 0.9098 (memory)`"""
    return f"  {node_id:<30} {state:<6} {seconds:7.1f} s  {figure}".rstrip()


class ComponentProgress(logging.Handler):
    """Prints `progress_line` for each node LocalDagRunner finishes. `lookup(node_id)`
    returns (state, figure) from ML Metadata; a lookup that fails prints the line without
    a figure rather than stopping the run."""

    def __init__(self, write: Callable[[str], None], lookup: Callable[[str], tuple[str, str]]):
        super().__init__(level=logging.INFO)
        self._write = write
        self._lookup = lookup
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg not in (RUNNING_MESSAGE, FINISHED_MESSAGE) or not record.args:
            return
        node_id = str(record.args[0])
        if record.msg == RUNNING_MESSAGE:
            self._started[node_id] = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started.pop(node_id, time.perf_counter())
        try:
            state, figure = self._lookup(node_id)
        except Exception as error:  # noqa: BLE001 (a progress line must not fail the run)
            state, figure = "done", f"(no figure: {error})"
        self._write(progress_line(node_id, state, seconds, figure))


def quiet_logging(console: RunConsole, lookup: Callable[[str], tuple[str, str]]) -> None:
    """Python logging at INFO into the (redirected) stderr, absl's INFO included, and the
    progress handler on absl's logger: one, replacing an earlier run's (a process that runs
    the pipeline several times, as --simulate_days does, printed each line once per run)."""
    from absl import logging as absl_logging

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    # through absl's verbosity flag, not the logger's level: TensorFlow silences absl around
    # SavedModel writes and restores the flag's value (autotrackable.py), which would
    # otherwise put the level back to WARNING and hide every later "is finished"
    absl_logging.set_verbosity(absl_logging.INFO)
    progress = ComponentProgress(lambda line: print(line, file=console.out), lookup)
    absl_logger = logging.getLogger("absl")
    for earlier in [h for h in absl_logger.handlers if isinstance(h, ComponentProgress)]:
        absl_logger.removeHandler(earlier)
    absl_logger.addHandler(progress)


def node_state_and_figure(metadata_path: str, pipeline_name: str, node_id: str):
    """(ran|cached|<state>, key figure) of the node's latest execution in ML Metadata."""
    execution, outputs = component_figures.latest_execution(metadata_path, pipeline_name, node_id)
    if execution is None:
        return "done", ""
    return component_figures.state_name(execution), component_figures.key_figure(outputs)
