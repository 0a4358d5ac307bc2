"""Commands that make training data: `pretrain` (item2vec) and `samples` (target samples)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from finetower.cli.app import command, print_json
from finetower.pretrain import PretrainConfig, pretrain
from finetower.samples import SampleConfig, build_samples

LAST_N_HELP = "mean of the user's last N items with a vector; 0 = the whole history"


class NegativeSampling(StrEnum):
    uniform = "uniform"
    popularity = "popularity"


class SplitBy(StrEnum):
    time = "time"
    random = "random"


class MissingUser(StrEnum):
    drop = "drop"
    mean = "mean"


def _config(kind: type, **values: object) -> PretrainConfig | SampleConfig:
    """Build a config; its validation errors become usage errors, not tracebacks."""
    try:
        return kind(**values)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@command("pretrain")
def pretrain_command(
    interactions: Annotated[
        Path,
        typer.Option(
            "--interactions",
            help="sequences file (user<TAB>item item ...) or a CSV/TSV/Parquet log "
            "(user, item, timestamp[, weight])",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="directory for vectors and manifest")],
    dim: Annotated[int, typer.Option(help="vector size")] = 128,
    window: Annotated[int, typer.Option(help="skip-gram context window")] = 5,
    min_count: Annotated[int, typer.Option(help="drop items seen fewer times (counted)")] = 5,
    epochs: Annotated[int, typer.Option(help="passes over the sequences")] = 5,
    negative: Annotated[int, typer.Option(help="negative samples per skip-gram pair")] = 5,
    workers: Annotated[
        int, typer.Option(help="threads; only 1 gives bit-identical vectors run to run")
    ] = 1,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    last_n: Annotated[int, typer.Option(help=LAST_N_HELP)] = 5,
    half_life: Annotated[
        float | None, typer.Option(help="weigh items by 0.5^(age in items / half-life)")
    ] = None,
    min_weight: Annotated[
        float | None, typer.Option(help="drop events whose weight (rating) is below this")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Train item2vec (skip-gram word2vec) on each user's items in time order."""
    config = _config(
        PretrainConfig,
        dim=dim,
        window=window,
        min_count=min_count,
        epochs=epochs,
        negative=negative,
        workers=workers,
        seed=seed,
        last_n=last_n or None,
        half_life=half_life,
        min_weight=min_weight,
    )
    manifest = pretrain(interactions, out, config).manifest
    if json:
        print_json(manifest)
        return
    training = manifest["training"]
    typer.echo(
        f"{manifest['vocab_size']} item vectors ({manifest['items_dropped_min_count']} items "
        f"below min-count), {manifest['users'] - manifest['users_without_vector']} user "
        f"vectors ({manifest['users_without_vector']} users without) -> {out}\n"
        f"{training['words_trained']} words in {training['seconds']} s "
        f"({training['words_per_second']} words/s)"
    )


@command("samples")
def samples_command(
    interactions: Annotated[
        Path, typer.Option("--interactions", help="target-domain log (CSV/TSV/Parquet)")
    ],
    vectors: Annotated[
        Path, typer.Option("--vectors", help="a `finetower pretrain` directory or a vector file")
    ],
    out: Annotated[Path, typer.Option("--out", help="directory for the samples")],
    source: Annotated[
        Path | None,
        typer.Option(
            help="source-domain log for user history; default: the log the vectors were "
            "pretrained on, when it is a table"
        ),
    ] = None,
    no_source: Annotated[
        bool, typer.Option("--no-source", help="user vectors from target history only")
    ] = False,
    negatives: Annotated[int, typer.Option(help="negatives per positive")] = 4,
    negative_sampling: Annotated[
        NegativeSampling, typer.Option(help="uniform, or popularity^0.75 by train counts")
    ] = NegativeSampling.uniform,
    split: Annotated[
        SplitBy, typer.Option(help="time: each user's last events held out; random: per event")
    ] = SplitBy.time,
    val_size: Annotated[
        float | None, typer.Option(help="time: events per user (1); random: a fraction (0.1)")
    ] = None,
    test_size: Annotated[
        float | None, typer.Option(help="time: events per user (1); random: a fraction (0.1)")
    ] = None,
    last_n: Annotated[int, typer.Option(help=LAST_N_HELP)] = 5,
    half_life: Annotated[
        float | None, typer.Option(help="weigh items by 0.5^(age in items / half-life)")
    ] = None,
    missing_user: Annotated[
        MissingUser,
        typer.Option(help="a positive without user history: drop it, or use the mean item"),
    ] = MissingUser.drop,
    min_weight: Annotated[
        float | None, typer.Option(help="target events below this weight are not positives")
    ] = None,
    text: Annotated[bool, typer.Option(help="also write the recipe's text files")] = True,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Build train/val/test samples for the target domain, without leaking the future."""
    if source is not None and no_source:
        raise typer.BadParameter("give --source or --no-source, not both")
    config = _config(
        SampleConfig,
        negatives=negatives,
        negative_sampling=negative_sampling.value,
        split=split.value,
        val_size=val_size,
        test_size=test_size,
        last_n=last_n or None,
        half_life=half_life,
        missing_user=missing_user.value,
        min_weight=min_weight,
        text=text,
        seed=seed,
    )
    manifest = build_samples(
        interactions,
        vectors,
        out,
        source=None if no_source else (source or "pretrained"),
        config=config,
    )
    if json:
        print_json(manifest)
        return
    for name, counts in manifest["splits"].items():
        typer.echo(
            f"{name}: {counts['rows']} rows ({counts['positives']} positives), "
            f"{counts['positives_without_user_history']} positives without user history "
            f"({config.missing_user})"
        )
    coverage = manifest["coverage"]
    typer.echo(
        f"coverage: {coverage['target_events_item_without_vector']} target events "
        f"({coverage['target_items_without_vector']} items) without an item vector, dropped; "
        f"source history: {'yes' if coverage['source_history'] else 'no'} -> {out}"
    )
