"""Commands for retrieval: index, recall, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from finetower.artifacts import read_json
from finetower.cli.app import command, print_json
from finetower.dataset import SampleDataset
from finetower.errors import DataError
from finetower.evaluate import (
    DEFAULT_KS,
    evaluate_models,
    index_recall,
    pointwise_metrics,
    read_interactions,
)
from finetower.export import folded_queries, item_embeddings
from finetower.index import load_index
from finetower.recall import Recaller, build_item_index
from finetower.runs import CONFIG_FILE, load_run
from finetower.user_vectors import DEFAULT_LAST_N
from finetower.vectors import read_vectors


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs -> parameters (numbers where they parse as numbers)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key.replace("-", "_")] = int(value)
        except ValueError:
            params[key.replace("-", "_")] = value
    return params


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--k takes cut-offs like 10,20,50, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise typer.BadParameter(f"--k cut-offs must be positive, got {text!r}")
    return ks


@command("index")
def index_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    items: Annotated[Path, typer.Option("--items", help="Pretrained item vectors.")],
    out: Annotated[Path, typer.Option("--out", help="Index directory to write.")],
    backend: Annotated[str, typer.Option(help="flat | hnsw | ivf | annoy")] = "flat",
    param: Annotated[
        list[str] | None,
        typer.Option(help="Backend parameter KEY=VALUE, repeatable (e.g. ef_search=512)."),
    ] = None,
    batch_rows: Annotated[int, typer.Option(help="Items per item-tower batch.")] = 65_536,
    json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Embed items with the run's item tower and build an inner-product index."""
    manifest = build_item_index(
        run_dir,
        items,
        out,
        backend=backend,
        params=parse_params(param or []),
        batch_rows=batch_rows,
    )
    if json:
        print_json(manifest)
        return
    typer.echo(
        f"{manifest['count']:,} items, {manifest['backend']} {manifest['params']}, "
        f"model {manifest['model']} -> {out}"
    )


@command("recall")
def recall_command(
    index_dir: Annotated[Path, typer.Argument(help="Index directory from `finetower index`.")],
    history: Annotated[
        str | None, typer.Option(help="Item ids, oldest to newest, comma-separated.")
    ] = None,
    user_vector: Annotated[
        str | None, typer.Option(help="A pretrained user vector, comma-separated floats.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="A user id in --user-vectors.")] = None,
    user_vectors: Annotated[Path | None, typer.Option(help="Pretrained user vectors.")] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.")] = 10,
    exclude_seen: Annotated[bool, typer.Option(help="Drop the history's own items.")] = False,
    last_n: Annotated[int, typer.Option(help="History items averaged (0: all).")] = DEFAULT_LAST_N,
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="Run to use (default: the index's copy).")
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="Item vectors (default: the path the index recorded).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Top k items with the model's probability for a history, a user vector or a user id."""
    given = [name for name, value in [("--history", history), ("--user-vector", user_vector),
                                      ("--user", user)] if value is not None]  # fmt: skip
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --history, --user-vector, --user")
    if k < 1:
        raise typer.BadParameter("--k must be positive")
    recaller = Recaller(
        index_dir, run_dir=run_dir, items=items, user_vectors=user_vectors, last_n=last_n or None
    )
    if history is not None:
        ids = [part.strip() for part in history.split(",") if part.strip()]
        result = recaller.for_history(ids, k, exclude_seen=exclude_seen)
    elif user_vector is not None:
        try:
            vector = np.array([float(x) for x in user_vector.split(",")], dtype=np.float32)
        except ValueError:
            raise DataError("--user-vector takes comma-separated numbers") from None
        if len(vector) != recaller.model.config.user_dim:
            raise DataError(
                f"--user-vector has {len(vector)} values; the model takes "
                f"{recaller.model.config.user_dim}"
            )
        result = recaller.for_user_vector(vector, k)
    else:
        result = recaller.for_user(user, k)
    if json:
        print_json(result)
        return
    for rank, item in enumerate(result["items"], 1):
        typer.echo(f"{rank:>4}  {item['id']}  {item['score']:.4f}")
    if result.get("unknown_history"):
        typer.echo(f"({result['unknown_history']} history ids have no pretrained vector)")


def _run_vocabularies(run_dir: Path, data_dir: Path | None) -> dict[str, list[str]]:
    """The vocabularies an ID model's id rows stand for: `data_dir`'s, else its training data's."""
    if data_dir is None:
        train_data = (read_json(run_dir / CONFIG_FILE).get("data") or {}).get("train")
        if not train_data or not Path(train_data).is_dir():
            raise DataError(
                f"{run_dir} has ID embeddings and names no training data set to read its "
                "vocabularies from; pass --vocab DATA_SET"
            )
        data_dir = Path(train_data)
    samples = SampleDataset(data_dir)
    return {side: samples.vocabulary(side) for side in ("user", "item")}


@command("evaluate")
def evaluate_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    test: Annotated[Path, typer.Option("--test", help="Test interactions (parquet/CSV).")],
    train_data: Annotated[
        Path, typer.Option("--train", help="Training interactions: excluded, and histories.")
    ],
    items: Annotated[Path, typer.Option("--items", help="Pretrained item vectors: catalogue.")],
    user_vectors: Annotated[
        Path | None, typer.Option(help="Pretrained user vectors (default: from histories).")
    ] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs.")] = ",".join(map(str, DEFAULT_KS)),
    last_n: Annotated[int, typer.Option(help="History items averaged (0: all).")] = DEFAULT_LAST_N,
    baselines: Annotated[str, typer.Option(help="popularity,pretrained or none.")] = (
        "popularity,pretrained"
    ),
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="Also measure this index's recall@K.")
    ] = None,
    index_queries: Annotated[int, typer.Option(help="Users sampled for --index.")] = 1000,
    pointwise: Annotated[
        Path | None, typer.Option(help="Labelled samples (text format): AUC and log-loss.")
    ] = None,
    vocab: Annotated[
        Path | None,
        typer.Option(
            help="ID models: the data set whose user_vocab.txt / item_vocab.txt name the "
            "id rows (default: the run's training data)."
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Exact full-catalogue Recall/HitRate/NDCG@K and MRR, with baselines; ANN recall apart."""
    ks = parse_ks(k)
    model = load_run(run_dir)
    vocabularies = None
    if model.config.has_ids:
        if pointwise is not None:
            raise DataError("text samples carry no ids: --pointwise cannot score an ID model")
        vocabularies = _run_vocabularies(run_dir, vocab)
    item_vectors = read_vectors(items)
    user_table = read_vectors(user_vectors) if user_vectors is not None else None
    chosen = [] if baselines == "none" else [b.strip() for b in baselines.split(",") if b.strip()]
    unknown = set(chosen) - {"popularity", "pretrained"}
    if unknown:
        raise typer.BadParameter(f"unknown baseline(s) {sorted(unknown)}")
    report = evaluate_models(
        item_vectors,
        read_interactions(train_data),
        read_interactions(test),
        model=model,
        vocabularies=vocabularies,
        user_vectors=user_table,
        ks=ks,
        last_n=last_n or None,
        baselines=chosen,
    )
    if index_dir is not None:
        index = load_index(index_dir)
        rows = item_vectors.index()
        missing = [i for i in index.ids if i not in rows]
        if missing:
            raise DataError(f"{len(missing)} index ids are not in {items}, e.g. {missing[0]!r}")
        embedded = item_embeddings(model, item_vectors.vectors[[rows[i] for i in index.ids]])
        rng = np.random.default_rng(0)
        sample = rng.choice(len(embedded), min(index_queries, len(embedded)), replace=False)
        # queries: users whose history is one random item — spread over the catalogue
        queries = folded_queries(model, item_vectors.vectors[[rows[index.ids[s]] for s in sample]])
        report["index"] = {
            "backend": index.backend,
            "params": index.params,
            **{f"recall@{kk}": index_recall(index, queries, embedded, kk) for kk in ks},
        }
    if pointwise is not None:
        from finetower.textformat import read_text_samples

        samples = read_text_samples(pointwise, model.config.user_dim)
        report["pointwise"] = pointwise_metrics(model, samples.users, samples.items, samples.labels)
    if json:
        print_json(report)
        return
    names = [name for name in ("model", "pretrained", "popularity") if name in report]
    metrics = [m for m in report[names[0]] if "@" in m or m == "mrr"] if names else []
    typer.echo(f"{'metric':<14}" + "".join(f"{name:>12}" for name in names))
    for metric in metrics:
        typer.echo(f"{metric:<14}" + "".join(f"{report[n][metric]:>12.4f}" for n in names))
    if names:
        typer.echo(f"users {report[names[0]]['users']:,}, catalogue {report[names[0]]['items']:,}")
    for section in ("index", "pointwise"):
        if section in report:
            typer.echo(f"{section}: {report[section]}")
