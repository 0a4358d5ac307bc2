"""`finetower demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from finetower.cli.app import command, print_json
from finetower.demo import KS, METHODS, run_demo


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Where artifacts and the report go.")] = Path(
        "finetower-demo"
    ),
    movielens: Annotated[
        Path | None,
        typer.Option(help="MovieLens u.data / ratings.dat (or its folder) instead of synthetic."),
    ] = None,
    seed: int = 0,
    epochs: Annotated[int, typer.Option(help="At most; early stopping on val loss.")] = 10,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Pretrain, build samples, fine-tune the recipe, evaluate, index and recall — end to end."""
    stdout = Console()
    progress = Console(stderr=True)
    report = run_demo(
        out,
        movielens=movielens,
        seed=seed,
        epochs=epochs,
        progress=not quiet,
        log=(lambda *_: None) if quiet else progress.print,
    )
    if json:
        print_json(
            {
                "data": report.data,
                "metrics": report.metrics,
                "test_auc": report.auc,
                "examples": report.examples,
            }
        )
        return
    table = Table(title=f"held-out target interactions — {report.data}")
    table.add_column("method")
    for k in KS:
        table.add_column(f"Recall@{k}", justify="right")
    table.add_column("NDCG@10", justify="right")
    for name, label in METHODS.items():
        m = report.metrics[name]
        table.add_row(label, *[f"{m[f'recall@{k}']:.4f}" for k in KS], f"{m['ndcg@10']:.4f}")
    stdout.print(table)
    stdout.print(f"test AUC (recipe): {report.auc:.4f}")
    for example in report.examples:
        recalled = ", ".join(item["id"] for item in example["recalled"])
        stdout.print(f"user {example['user']}: last {example['last_items']} -> {recalled}")
    stdout.print(f"report: {out / 'report.md'}, plot: {out / 'recall_at_k.png'}")
