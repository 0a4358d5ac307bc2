"""Span patterns through the TFX CLI, as the README runs it (`tfx pipeline create` then `tfx run
create` on LocalDagRunner, configuration from FINETOWER_* variables): with two spans on disk
the run ingests the newest, and the Examples artifact in ML Metadata carries that span."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from pipeline_helpers import REPO, activated, tfx_cli

from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv
from pipeline.run_summary import latest_run_artifacts

DIM = 8


def write_day(folder: Path, seed: int, rows: int = 600) -> None:
    """One span's train.csv and eval.csv (a small demo world of 8-dimensional vectors)."""
    labels, users, items, _ = demo_samples(
        DemoData(rows=rows, items=40, user_dim=DIM, item_dim=DIM, seed=seed)
    )
    cut = int(rows * 0.8)
    write_recipe_csv(folder / "train.csv", labels[:cut], users[:cut], items[:cut])
    write_recipe_csv(folder / "eval.csv", labels[cut:], users[cut:], items[cut:])


def tfx(*args: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["tfx", *args, "--engine", "local"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def days_since_epoch(day: str) -> int:
    """The span FileBasedExampleGen's driver gives a {YYYY}{MM}{DD} folder."""
    return (datetime.date.fromisoformat(day) - datetime.date(1970, 1, 1)).days


@pytest.mark.skipif(tfx_cli() is None, reason="the tfx CLI is not installed beside this Python")
@pytest.mark.parametrize(
    ("folders", "placeholder", "newest_span"),
    [
        (["span-1", "span-2"], "span-{SPAN}", 2),
        (["20261205", "20261206"], "{YYYY}{MM}{DD}", days_since_epoch("2026-12-06")),
    ],
    ids=["span", "date"],
)
def test_tfx_cli_run_ingests_the_newest_span(tmp_path, folders, placeholder, newest_span):
    data = tmp_path / "data"
    for seed, folder in enumerate(folders):
        write_day(data / folder, seed)
    out = tmp_path / "out"
    env = {
        **activated(),
        "LOCAL_HOME": str(tmp_path / "tfx_home"),
        "FINETOWER_OUTPUT_DIR": str(out),
        "FINETOWER_TRAIN_DATA": str(data / placeholder / "train.csv"),
        "FINETOWER_VAL_DATA": str(data / placeholder / "eval.csv"),
        "FINETOWER_USER_DIM": str(DIM),
        "FINETOWER_ITEM_DIM": str(DIM),
        "FINETOWER_EPOCHS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    create = tfx(
        "pipeline", "create", "--pipeline_path", "pipeline/local_runner.py", env=env, timeout=300
    )
    assert create.returncode == 0, create.stderr[-3000:]
    run = tfx("run", "create", "--pipeline_name", "finetower", env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    examples = latest_run_artifacts(str(out / "metadata.sqlite"))["Examples"]
    assert [e.properties["span"].int_value for e in examples] == [newest_span]
    # the files of the newest span only: a split's rows are that span's
    (example_gen_output,) = examples
    assert Path(example_gen_output.uri, "Split-train").is_dir()
