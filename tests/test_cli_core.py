import json

import numpy as np
from typer.testing import CliRunner

from finetower.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_convert_train_predict_embed(sample_files, tmp_path):
    result = invoke("convert", sample_files["train"], tmp_path / "train_ds", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 6000

    run = tmp_path / "run"
    result = invoke(
        "train",
        "--train",
        tmp_path / "train_ds",
        "--val",
        sample_files["val"],
        "--out",
        run,
        "--epochs",
        1,
        "--quiet",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["history"][0]["val_auc"] > 0.6

    result = invoke("predict", run, "--input", sample_files["val"], "--out", tmp_path / "p.txt")
    assert result.exit_code == 0, result.output
    assert len(np.loadtxt(tmp_path / "p.txt")) == 2000

    np.save(tmp_path / "items.npy", np.ones((4, 128), dtype=np.float32))
    result = invoke(
        "embed",
        run,
        "--side",
        "item",
        "--input",
        tmp_path / "items.npy",
        "--out",
        tmp_path / "emb.npy",
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "emb.npy").shape == (4, 64)


def test_bad_input_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1,0.5,0.5\n0,0.1,abc\n")
    result = invoke("train", "--train", path, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2
    assert f"{path}, line 2, column 3: 'abc' is not a number" in result.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_skip_bad_lines_reports_what_it_skipped(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1,0.5,0.5\n0,0.1,nan\n0,0.1,0.2\n")
    result = invoke("convert", path, tmp_path / "ds", "--skip-bad-lines")
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad line(s), first: line 2: value 'nan' is not finite" in result.output


def test_resume_via_cli_after_completion_is_a_no_op_that_keeps_the_model(sample_files, tmp_path):
    run = tmp_path / "run"
    assert (
        invoke(
            "train", "--train", sample_files["val"], "--out", run, "--epochs", 1, "--quiet"
        ).exit_code
        == 0
    )
    before = (run / "model.safetensors").read_bytes()
    result = invoke("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert (run / "model.safetensors").read_bytes() == before
