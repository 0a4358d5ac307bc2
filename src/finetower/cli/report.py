"""`finetower report`: popularity, pretrained vectors and every trained method, compared."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from finetower.cli.app import command, print_json
from finetower.report import KS, run_report


@command("report")
def report_command(
    out: Annotated[Path, typer.Option("--out", help="Where runs and the report go.")] = Path(
        "finetower-report"
    ),
    movielens: Annotated[
        Path | None,
        typer.Option(help="MovieLens u.data / ratings.dat (or its folder) instead of synthetic."),
    ] = None,
    seed: int = 0,
    epochs: Annotated[int, typer.Option(help="At most, per method; early stopping.")] = 10,
    quiet: Annotated[bool, typer.Option(help="No progress messages.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train every method on one split and compare them by exact full-catalogue Recall@K."""
    progress = Console(stderr=True)
    report = run_report(
        out,
        movielens=movielens,
        seed=seed,
        epochs=epochs,
        log=(lambda *_: None) if quiet else progress.print,
    )
    if json:
        payload = asdict(report)
        payload["out_dir"] = str(report.out_dir)
        print_json(payload)
        return
    table = Table(title=f"held-out target events — {report.data}")
    table.add_column("method")
    for k in KS:
        table.add_column(f"Recall@{k}", justify="right")
    table.add_column("NDCG@10", justify="right")
    table.add_column("test AUC", justify="right")
    for name, label in report.labels.items():
        m = report.metrics[name]
        auc = f"{report.test_auc[name]:.4f}" if name in report.test_auc else "–"
        table.add_row(label, *[f"{m[f'recall@{k}']:.4f}" for k in KS], f"{m['ndcg@10']:.4f}", auc)
    stdout = Console()
    stdout.print(table)
    stdout.print(f"report: {out / 'report.md'}, plot: {out / 'recall_at_k.png'}")
