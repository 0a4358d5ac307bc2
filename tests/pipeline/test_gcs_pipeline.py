"""The whole pipeline on a GCS API server (tests/gcs_emulator.py): LocalDagRunner, ML Metadata
in a local SQLite file, data, pipeline root, serving dir and output dir on `gs://`. The checks
run inside the server's namespace (tests/gcs_inside/inside_pipeline.py)."""

from __future__ import annotations

import re

import pytest

from tests.gcs_emulator import run_pytest_in_gcs, skip_reason

# ~2-4 min here (two runs and a failing one): part of the default suite, not `-m cluster`
pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def test_the_whole_pipeline_on_gs():
    done = run_pytest_in_gcs("tests/gcs_inside/inside_pipeline.py", timeout=3600)
    summary = re.findall(r"^(?:FAILED|ERROR) .*$", done.stdout, flags=re.MULTILINE)
    assert done.returncode == 0, "\n".join(summary) + "\n" + done.stdout[-20000:]
    # 6 tests, every one passed: none skipped, none expected to fail
    assert re.search(r"\b6 passed\b", done.stdout), done.stdout[-3000:]
    closing = done.stdout.strip().splitlines()[-1]
    assert not re.search(r"skipped|xfailed|xpassed", closing), done.stdout[-3000:]
