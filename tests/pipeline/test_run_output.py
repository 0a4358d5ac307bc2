"""The runner's console: descriptors 1 and 2 into the log file (and the terminal with
--verbose), the runner's own lines on the terminal, one progress line per finished node."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.run_output import (
    FINISHED_MESSAGE,
    RUNNING_MESSAGE,
    ComponentProgress,
    log_path,
    progress_line,
)
from tests.pipeline_helpers import REPO

# a child process that writes the way TensorFlow's C++ core (raw descriptor 2), Keras (print)
# and Python logging do, inside RunConsole, then its own line on the console
CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from pipeline.run_output import RunConsole
    with RunConsole(sys.argv[1], verbose=sys.argv[2] == "1") as console:
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit\\n")
        print("Epoch 1/2")
        logging.warning("a library warning")
        print("  Trainer ran 1.0 s", file=console.out)
    print("after: back on the console")
    """
)


def run_child(tmp_path, verbose: bool) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "logs" / "run.log"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), "1" if verbose else "0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done, log.read_text()


def test_quiet_console_keeps_every_log_line_in_the_file(tmp_path):
    done, log = run_child(tmp_path, verbose=False)
    assert done.stdout == "  Trainer ran 1.0 s\nafter: back on the console\n"
    assert done.stderr == ""
    for line in ("failed call to cuInit", "Epoch 1/2", "a library warning"):
        assert line in log
    assert "Trainer ran" not in log


def test_verbose_console_shows_the_log_lines_and_still_writes_the_file(tmp_path):
    done, log = run_child(tmp_path, verbose=True)
    assert "  Trainer ran 1.0 s\n" in done.stdout
    for line in ("failed call to cuInit", "Epoch 1/2", "a library warning"):
        assert line in log and line in done.stderr


def _record(message: str, node: str) -> logging.LogRecord:
    return logging.LogRecord("absl", logging.INFO, __file__, 1, message, (node,), None)


def test_one_progress_line_per_finished_node_and_a_failed_lookup_does_not_stop_the_run():
    lines: list[str] = []

    def lookup(node: str) -> tuple[str, str]:
        if node == "Evaluator":
            raise RuntimeError("metadata busy")
        return ("cached" if node == "Transform" else "ran"), f"figure of {node}"

    progress = ComponentProgress(lines.append, lookup)
    for node in ("Transform", "Evaluator"):
        progress.emit(_record(RUNNING_MESSAGE, node))
        progress.emit(_record("Going to run a new execution %s", node))  # not a progress event
        progress.emit(_record(FINISHED_MESSAGE, node))
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["Transform", "cached"]
    assert lines[0].endswith("figure of Transform")
    assert lines[1].split()[:2] == ["Evaluator", "done"] and "metadata busy" in lines[1]


def test_progress_line_and_log_path_shapes():
    assert progress_line("Trainer", "ran", 12.34, "val AUC 0.9").split() == [
        "Trainer",
        "ran",
        "12.3",
        "s",
        "val",
        "AUC",
        "0.9",
    ]
    assert log_path("/out", now=0) == "/out/logs/run-19700101-000000.log"
    remote = log_path("gs://bucket/out", now=0)
    assert "://" not in remote and remote.endswith("run-19700101-000000.log")


@pytest.mark.parametrize("verbose", [False, True])
def test_an_exception_inside_reaches_the_console(tmp_path, verbose):
    child = textwrap.dedent(
        """
        import sys
        from pipeline.run_output import RunConsole
        with RunConsole(sys.argv[1], verbose=sys.argv[2] == "1"):
            raise SystemExit("finetower: something broke")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "run.log"), "1" if verbose else "0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "finetower: something broke" in done.stderr


def test_a_second_run_in_one_process_prints_each_progress_line_once():
    """--simulate_days and the benchmarks run the pipeline several times in one process."""
    import io
    import types

    from pipeline.run_output import quiet_logging

    absl_logger = logging.getLogger("absl")
    before = list(absl_logger.handlers)
    console = types.SimpleNamespace(out=io.StringIO())
    try:
        for _ in range(3):
            quiet_logging(console, lambda node: ("ran", f"figure of {node}"))
        absl_logger.handle(_record(FINISHED_MESSAGE, "Trainer"))
    finally:
        for handler in absl_logger.handlers[:]:
            if handler not in before:
                absl_logger.removeHandler(handler)
    assert len(console.out.getvalue().splitlines()) == 1
