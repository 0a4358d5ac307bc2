"""Run inside the GCS namespace only (tests/gcs_emulator.py; started by
tests/test_gcs_filesystems.py): TensorFlow's `gs://` filesystem and Beam's GCS IO against the
emulated bucket."""

from __future__ import annotations

import os
import uuid

import pytest

BUCKET = os.environ.get("FINETOWER_GCS_TEST_BUCKET")
pytestmark = pytest.mark.skipif(BUCKET is None, reason="runs inside tests/gcs_emulator.py only")


@pytest.fixture
def root() -> str:
    """A fresh folder on the bucket."""
    return f"gs://{BUCKET}/{uuid.uuid4().hex}"


def test_gfile_write_read_rename_glob_round_trip(root):
    import tensorflow as tf

    gfile = tf.io.gfile
    payload = os.urandom(3 * 1024 * 1024 + 17)
    gfile.makedirs(f"{root}/a/b")
    assert gfile.isdir(f"{root}/a/b")
    with gfile.GFile(f"{root}/a/data.bin", "wb") as f:
        f.write(payload)
    with gfile.GFile(f"{root}/a/b/empty.txt", "w") as f:
        f.write("")  # an empty upload (GFile creates nothing before a first write)
    with gfile.GFile(f"{root}/a/data.bin", "rb") as f:
        assert f.read() == payload  # the chunked upload's framing is not stored
    assert gfile.stat(f"{root}/a/data.bin").length == len(payload)
    assert gfile.GFile(f"{root}/a/b/empty.txt").read() == ""

    gfile.rename(f"{root}/a/data.bin", f"{root}/a/moved.bin")
    assert not gfile.exists(f"{root}/a/data.bin")
    gfile.rename(f"{root}/a", f"{root}/c")  # a folder: TF asks for the storageLayout first
    assert sorted(gfile.listdir(f"{root}/c")) == ["b/", "moved.bin"]
    assert gfile.glob(f"{root}/c/*.bin") == [f"{root}/c/moved.bin"]
    assert gfile.GFile(f"{root}/c/moved.bin", "rb").read() == payload
    gfile.rmtree(f"{root}/c")
    assert not gfile.exists(f"{root}/c/moved.bin")


def test_beam_writes_and_reads_tfrecords_on_gs(root):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.configs import BEAM_IN_MEMORY

    records = [f"record {i}".encode() for i in range(500)]
    options = PipelineOptions(BEAM_IN_MEMORY)
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | beam.Create(records)
            | beam.io.WriteToTFRecord(
                f"{root}/out/part",
                file_name_suffix=".tfrecord",
                num_shards=3,
            )
        )
    shards = FileSystems.match([f"{root}/out/part-*.tfrecord"])[0].metadata_list
    assert len(shards) == 3  # finalized: renamed out of Beam's temp folder, which is gone
    assert not FileSystems.match([f"{root}/out/beam-temp-*"])[0].metadata_list

    with beam.Pipeline(options=options) as p:
        read = p | beam.io.ReadFromTFRecord(f"{root}/out/part-*.tfrecord")
        assert_that(read, equal_to(records))
