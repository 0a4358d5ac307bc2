"""Commands for the core: convert, train, predict, embed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetower.cli.app import command, console, print_json
from finetower.dataset import convert_text
from finetower.id_towers import IdTowers
from finetower.predict import SIDES, embed_file, predict_file
from finetower.runs import load_run
from finetower.train import TrainConfig, resume, train


def parse_tower(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"--tower takes sizes like 256,64, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise typer.BadParameter(f"--tower sizes must be positive, got {text!r}")
    return sizes


@command("convert")
def convert_command(
    text_file: Annotated[Path, typer.Argument(help="Samples in the text format.")],
    out_dir: Annotated[Path, typer.Argument(help="Directory for the converted data set.")],
    user_dim: Annotated[int | None, typer.Option(help="User vector size (default: half).")] = None,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip and count bad lines.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Convert a text sample file into a memory-mappable columnar data set."""
    dataset, bad = convert_text(text_file, out_dir, user_dim, skip_bad_lines=skip_bad_lines)
    if json:
        print_json(dataset.manifest)
        return
    console.print(
        f"{dataset.rows:,} samples (user {dataset.user_dim}, item {dataset.item_dim}) -> {out_dir}"
    )
    if skip_bad_lines:
        console.print(bad.summary(text_file))


@command("train")
def train_command(
    train_data: Annotated[
        Path | None, typer.Option("--train", help="Text file or converted data set.")
    ] = None,
    val_data: Annotated[Path | None, typer.Option("--val", help="Validation data.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    resume_dir: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this directory.")
    ] = None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_rule: Annotated[
        str, typer.Option(help="Scale lr for large batches: none | sqrt | linear (vs 128).")
    ] = "none",
    patience: int = 10,
    seed: int = 0,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Also checkpoint every N steps.")
    ] = None,
    user_dim: Annotated[int | None, typer.Option(help="User vector size (default: half).")] = None,
    tower: Annotated[str, typer.Option(help="Hidden sizes of each tower, e.g. 256,64.")] = "64",
    activation: str = "relu",
    dropout: float = 0.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (default: 1 up to batch 256, else all).")
    ] = None,
    text_mode: Annotated[
        str, typer.Option(help="Text input: convert (cached by checksum) | stream.")
    ] = "convert",
    skip_bad_lines: bool = False,
    loss: Annotated[str, typer.Option(help="bce (the recipe) | softmax (in-batch).")] = "bce",
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 1.0,
    logq: Annotated[bool, typer.Option(help="Softmax: logQ correction by item frequency.")] = True,
    normalize: Annotated[bool, typer.Option(help="Softmax: L2-normalise embeddings.")] = False,
    id_towers: Annotated[
        bool, typer.Option(help="Add trainable ID embeddings (needs a data set with ids).")
    ] = False,
    init_from: Annotated[
        Path | None, typer.Option(help="ID towers: initialise from a pretrain directory.")
    ] = None,
    freeze_epochs: Annotated[int, typer.Option(help="ID towers: frozen for N epochs.")] = 0,
    id_dim: Annotated[int | None, typer.Option(help="ID embedding size.")] = None,
    use_vectors: Annotated[
        bool, typer.Option(help="ID towers: also feed the pretrained vectors.")
    ] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the history as JSON.")] = False,
) -> None:
    """Train the two-tower model (the recipe by default), or resume a killed run."""
    if resume_dir is not None:
        result = resume(resume_dir, progress=not quiet)
    else:
        if train_data is None or out is None:
            raise typer.BadParameter("--train and --out are required (or --resume RUN_DIR)")
        try:
            config = TrainConfig(
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                lr_rule=lr_rule,
                patience=patience,
                seed=seed,
                checkpoint_every=checkpoint_every,
                device=device,
                threads=threads,
                text_mode=text_mode,
                skip_bad_lines=skip_bad_lines,
                loss=loss,
                temperature=temperature,
                logq=logq,
                normalize=normalize,
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
        if text_mode not in ("convert", "stream"):
            raise typer.BadParameter(f"--text-mode must be convert or stream, got {text_mode!r}")
        result = train(
            train_data,
            out,
            val_data=val_data,
            config=config,
            user_dim=user_dim,
            tower=parse_tower(tower),
            activation=activation,
            dropout=dropout,
            id_towers=IdTowers(
                init_from=str(init_from) if init_from else None,
                freeze_epochs=freeze_epochs,
                use_vectors=use_vectors,
                id_dim=id_dim,
            )
            if id_towers or init_from
            else None,
            progress=not quiet,
        )
    if json:
        print_json({"model": result.fingerprint, "history": result.history})
        return
    last = result.history[-1]
    console.print(
        f"model {result.fingerprint} -> {result.run_dir}  "
        + "  ".join(f"{k} {v:.4f}" for k, v in last.items())
    )


@command("predict")
def predict_command(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    input_path: Annotated[Path, typer.Option("--input", help="Samples (text format).")],
    out: Annotated[Path, typer.Option("--out", help="One probability per line.")],
) -> None:
    """Write the click probability of every input line, in input order."""
    rows = predict_file(load_run(run_dir), input_path, out)
    console.print(f"{rows:,} probabilities -> {out}")


@command("embed")
def embed_command(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    side: Annotated[str, typer.Option(help="user | item")],
    input_path: Annotated[Path, typer.Option("--input", help="word2vec file or .npy")],
    out: Annotated[Path, typer.Option("--out", help="Same format as the input.")],
    for_retrieval: Annotated[
        bool, typer.Option(help="User side: fold the output weights into the query.")
    ] = False,
) -> None:
    """Write each input vector's tower output (64-d for the recipe)."""
    if side not in SIDES:
        raise typer.BadParameter(f"--side must be user or item, got {side!r}")
    rows = embed_file(load_run(run_dir), side, input_path, out, for_retrieval=for_retrieval)
    console.print(f"{rows:,} {side} embeddings -> {out}")
