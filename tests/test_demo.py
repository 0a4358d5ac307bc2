import json

from typer.testing import CliRunner

from finetower.cli import app


def test_demo_runs_end_to_end_and_writes_its_report(tmp_path):
    from finetower.demo import run_demo

    report = run_demo(
        tmp_path / "demo",
        world={"n_users": 600, "n_items": 150, "agreement": 0.95},
        epochs=2,
        progress=False,
        log=lambda *_: None,
    )
    for name in (
        "report.md",
        "report.json",
        "recall_at_k.png",
        "run/model.safetensors",
        "index/manifest.json",
        "vectors/item_vectors.bin",
        "samples/manifest.json",
    ):
        assert (tmp_path / "demo" / name).exists(), name
    assert (tmp_path / "demo" / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = report.metrics
    assert set(metrics) == {"popularity", "pretrained", "model"}
    for scores in metrics.values():
        assert 0.0 <= scores["recall@10"] <= scores["recall@100"] <= 1.0
    # the pretrained vectors carry the world's tastes: well above random (20 of 150 items)
    assert metrics["pretrained"]["recall@20"] > 1.5 * 20 / 150
    assert report.examples and len(report.examples[0]["recalled"]) == 5
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["metrics"]["model"]["recall@10"] == metrics["model"]["recall@10"]


def test_demo_command_prints_the_table(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--epochs", "1", "--quiet", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["metrics"]) == {"popularity", "pretrained", "model"}
