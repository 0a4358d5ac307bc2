"""The whole pipeline on a GCS API server (tests/gcs_emulator.py): LocalDagRunner, ML Metadata
in a local SQLite file, data, pipeline root, serving dir and output dir on `gs://`. The checks
run inside the server's namespace (tests/gcs_inside/inside_pipeline.py)."""

from __future__ import annotations

import re

import pytest

from tests.gcs_emulator import run_pytest_in_gcs, skip_reason

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.cluster,
]


def test_the_whole_pipeline_on_gs():
    done = run_pytest_in_gcs("tests/gcs_inside/inside_pipeline.py", timeout=3600)
    summary = re.findall(r"^(?:FAILED|ERROR) .*$", done.stdout, flags=re.MULTILINE)
    assert done.returncode == 0, "\n".join(summary) + "\n" + done.stdout[-6000:]
    assert "6 passed" in done.stdout
