"""TensorFlow's `gs://` filesystem and Beam's GCS IO against a GCS API server on this machine
(tests/gcs_emulator.py): the checks run inside its private namespace, in a pytest of their own
(tests/gcs_inside/inside_filesystems.py), and this test asserts they passed."""

from __future__ import annotations

import pytest

from tests.gcs_emulator import run_pytest_in_gcs, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def test_tf_gfile_and_beam_round_trips_on_the_emulated_bucket():
    done = run_pytest_in_gcs("tests/gcs_inside/inside_filesystems.py", timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-2000:]
