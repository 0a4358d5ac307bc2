"""Commands about a model itself: import the Keras recipe's weights, summarise a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetower.cli.app import command, print_json
from finetower.keras_import import import_keras_weights
from finetower.runs import load_run
from finetower.summary import parameter_totals, plot_model, summary_rows, summary_table


@command("import-keras")
def import_keras(
    weights: Annotated[Path, typer.Argument(help="HDF5 file from the Keras model.save_weights")],
    out: Annotated[Path, typer.Option("--out", help="run directory to create")],
    user_layer: Annotated[str, typer.Option(help="Keras layer of the user tower")] = "dense",
    item_layer: Annotated[str, typer.Option(help="Keras layer of the item tower")] = "dense_1",
    output_layer: Annotated[str, typer.Option(help="Keras layer of the output")] = "dense_2",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run")] = False,
    json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Turn the Keras recipe's saved weights into a finetower run directory.

    Default layers are the recipe's: dense (user), dense_1 (item), dense_2 (output).
    """
    fingerprint = import_keras_weights(
        weights,
        out,
        user_layer=user_layer,
        item_layer=item_layer,
        output_layer=output_layer,
        overwrite=overwrite,
    )
    if json:
        print_json({"run_dir": str(out), "fingerprint": fingerprint})
    else:
        typer.echo(f"imported {weights} into {out} (fingerprint {fingerprint})")


@command("summary")
def summary(
    run_dir: Annotated[Path, typer.Argument(help="a finetower run directory")],
    plot: Annotated[
        Path | None, typer.Option("--plot", help="also draw the architecture to this PNG")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="print the layers as JSON")] = False,
) -> None:
    """Print a Keras-style table of the model's layers and parameters."""
    model = load_run(run_dir)
    if plot is not None:
        plot_model(model, plot)
    if json:
        print_json(
            {
                "config": model.config.to_dict(),
                "layers": [row.to_dict() for row in summary_rows(model)],
                "parameters": parameter_totals(model),
                "plot": str(plot) if plot is not None else None,
            }
        )
    else:
        typer.echo(summary_table(model))
        if plot is not None:
            typer.echo(f"architecture diagram: {plot}")
