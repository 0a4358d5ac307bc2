"""The Keras-style summary table, the architecture diagram, and the `summary` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import finetower.cli.model_tools  # noqa: F401  (registers the commands)
from finetower.cli.app import app
from finetower.model import ModelConfig, TwoTowerModel
from finetower.runs import save_run
from finetower.summary import plot_model, summary_rows, summary_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def table_params(table: str) -> dict[str, str]:
    """`layer name -> Param #` read back from the printed table."""
    rows = {}
    for line in table.splitlines():
        match = re.match(r"^ (\S+) \((\w+)\)\s+\(None, \d+\)\s+([\d,]+)", line)
        if match:
            rows[match.group(1)] = match.group(3)
    return rows


def test_default_model_has_the_recipes_16577_parameters() -> None:
    table = summary_table(TwoTowerModel())

    # user/item Dense(64): 128 * 64 + 64 = 8,256 each; output Dense(1): 64 + 1 = 65.
    assert table_params(table) == {
        "user": "0",
        "item": "0",
        "user_tower.0": "8,256",
        "user_tower.1": "0",
        "item_tower.0": "8,256",
        "item_tower.1": "0",
        "multiply": "0",
        "output": "65",
    }
    assert table.splitlines()[-3:] == [
        "Total params: 16,577",
        "Trainable params: 16,577",
        "Non-trainable params: 0",
    ]
    assert "Layer (type)" in table and "Connected to" in table
    multiply = next(line for line in table.splitlines() if line.startswith(" multiply"))
    assert "user_tower.1, item_tower.1" in multiply


def test_custom_towers_are_counted_layer_by_layer() -> None:
    model = TwoTowerModel(ModelConfig(tower=(256, 64), activation="tanh", dropout=0.1))

    table = summary_table(model)

    # 128 * 256 + 256 = 33,024; 256 * 64 + 64 = 16,448; per tower 49,472; + 65 for the output.
    params = table_params(table)
    assert params["user_tower.0"] == params["item_tower.0"] == "33,024"
    assert params["user_tower.3"] == params["item_tower.3"] == "16,448"
    assert params["user_tower.2"] == "0"  # dropout
    assert params["output"] == "65"
    assert "Total params: 99,009" in table
    shapes = {row.name: row.output_shape for row in summary_rows(model)}
    assert shapes["user_tower.1"] == (None, 256)  # the activation keeps the Linear's width
    assert shapes["item_tower.5"] == (None, 64)
    assert shapes["output"] == (None, 1)
    assert [row.kind for row in summary_rows(model)][2:5] == ["Linear", "Tanh", "Dropout"]


def test_frozen_weights_count_as_non_trainable() -> None:
    model = TwoTowerModel()
    model.user_tower.requires_grad_(False)

    lines = summary_table(model).splitlines()

    assert lines[-3:] == [
        "Total params: 16,577",
        "Trainable params: 8,321",
        "Non-trainable params: 8,256",
    ]


@pytest.mark.parametrize("tower", [(64,), (256, 128, 64)])
def test_plot_writes_a_png_and_nothing_else(tmp_path: Path, tower: tuple[int, ...]) -> None:
    target = tmp_path / "plots" / "model.png"

    written = plot_model(TwoTowerModel(ModelConfig(tower=tower, dropout=0.2)), target)

    assert written == target
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 400 and height > 400
    assert [p.name for p in target.parent.iterdir()] == ["model.png"]  # no temporary left


def test_summary_command_prints_table_json_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_run("run", TwoTowerModel(ModelConfig(tower=(256, 64))))
    runner = CliRunner()

    printed = runner.invoke(app, ["summary", "run"])
    assert printed.exit_code == 0, printed.output
    assert "Total params: 99,009" in printed.stdout

    as_json = runner.invoke(app, ["summary", "run", "--json", "--plot", "arch.png"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["parameters"] == {"total": 99_009, "trainable": 99_009, "non_trainable": 0}
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["user_tower.0"]["parameters"] == 33_024
    assert by_name["multiply"]["connected_to"] == ["user_tower.3", "item_tower.3"]
    assert Path("arch.png").read_bytes().startswith(PNG_SIGNATURE)

    missing = runner.invoke(app, ["summary", "no-such-run"])
    assert missing.exit_code == 2
    assert "config.json is missing" in missing.output
