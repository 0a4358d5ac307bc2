"""The local runner's paths: the output dir (hence the pipeline root and every artifact URI in
ML Metadata) is absolute; a remote output dir needs ML Metadata in a local file."""

from __future__ import annotations

import os

import pytest

from pipeline.local_runner import parse_args


def test_a_relative_output_dir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_args(["--output_dir", "out"])
    assert config.output_dir == str(tmp_path / "out")
    assert os.path.isabs(config.pipeline_root) and os.path.isabs(config.metadata_path)


def test_a_remote_output_dir_keeps_metadata_local(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", "gs://b/out"])
    assert "--metadata_path" in capsys.readouterr().err
    config = parse_args(
        ["--output_dir", "gs://b/out", "--metadata_path", str(tmp_path / "m.sqlite")]
    )
    assert config.pipeline_root == "gs://b/out/tfx"
    assert config.metadata_path == str(tmp_path / "m.sqlite")
    assert config.serving_dir == "gs://b/out/serving"
