import json

from typer.testing import CliRunner

import finetower.cli.report  # noqa: F401  (registers `finetower report`)
from finetower.cli import app
from finetower.report import KS, METHODS, run_report

EVERY_METHOD = {"popularity", "pretrained", *METHODS}


def test_report_compares_every_method_under_one_protocol(tmp_path):
    out = tmp_path / "report"
    report = run_report(
        out,
        world={"n_users": 150, "n_items": 60, "agreement": 0.95},
        epochs=1,
        log=lambda *_: None,
    )
    assert set(report.metrics) == EVERY_METHOD
    assert set(report.test_auc) == set(METHODS)  # baselines have no pointwise scores
    for name, m in report.metrics.items():
        recalls = [m[f"recall@{k}"] for k in KS]
        ndcgs = [m[f"ndcg@{k}"] for k in KS]
        assert all(0.0 <= v <= 1.0 for v in recalls + ndcgs + [m["mrr"]]), name
        assert recalls == sorted(recalls) and ndcgs == sorted(ndcgs), name
        # one protocol: every method is scored on the same users and test pairs
        assert (m["users"], m["test_pairs"]) == (
            report.protocol["users"],
            report.protocol["test_pairs_evaluated"],
        )
    # 60 items: Recall@100 covers the whole catalogue; Recall@10 must still discriminate
    assert all(m["recall@100"] == 1.0 for m in report.metrics.values())
    assert len({round(m["recall@10"], 6) for m in report.metrics.values()}) > 1
    assert report.protocol["users"] > 50
    assert all(0.0 <= auc <= 1.0 for auc in report.test_auc.values())

    for name in ("report.md", "report.json", "recall_at_k.png"):
        assert (out / name).exists(), name
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in METHODS:
        assert (out / "runs" / name / "model.safetensors").exists()
    text = (out / "report.md").read_text()
    assert "## Protocol" in text and "excluded" in text
    assert all(label in text for label in report.labels.values())
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"] == report.metrics and set(saved["test_auc"]) == set(METHODS)


def test_report_command_refuses_an_out_dir_with_runs(tmp_path):
    (tmp_path / "runs" / "recipe").mkdir(parents=True)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert "already holds trained runs" in result.output
