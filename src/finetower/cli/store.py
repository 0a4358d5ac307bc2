"""Commands for the Redis item store: publish, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetower.cli.app import command, print_json
from finetower.store import DEFAULT_BATCH, load_index_catalog, publish, redacted, rollback
from finetower.vectors import read_vectors

REDIS_HELP = "Redis URL, e.g. redis://127.0.0.1:6379/0."


@command("publish")
def publish_command(
    index_dir: Annotated[Path, typer.Argument(help="Index directory from `finetower index`.")],
    redis_url: Annotated[str, typer.Option("--redis", help=REDIS_HELP)],
    keep: Annotated[int, typer.Option(help="Older versions kept for rollback.")] = 2,
    items: Annotated[
        Path | None, typer.Option(help="Item vectors (default: the path the index recorded).")
    ] = None,
    user_vectors: Annotated[
        Path | None, typer.Option(help="Pretrained user vectors, for lookups by user id.")
    ] = None,
    batch: Annotated[int, typer.Option(help="Rows per Redis write.")] = DEFAULT_BATCH,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write an index's items to Redis as a new version, then switch to it atomically."""
    catalog = load_index_catalog(index_dir, items)
    users = None
    if user_vectors is not None:
        table = read_vectors(user_vectors)
        user_ids = table.ids or [str(i) for i in range(len(table))]
        users = (user_ids, table.vectors)
    report = publish(
        redis_url,
        catalog.fingerprint,
        catalog.ids,
        catalog.item_embeddings,
        catalog.item_vectors,
        catalog.bias,
        users,
        keep=keep,
        batch=batch,
        source=catalog.source,
    )
    if json:
        print_json(report.to_dict())
        return
    typer.echo(
        f"{report.items:,} items ({report.megabytes:,.0f} MB) in {report.seconds:.2f} s "
        f"({report.items_per_s:,.0f} items/s) -> {redacted(redis_url)} version {report.version}"
    )
    if report.previous:
        typer.echo(f"previous version {report.previous} kept for rollback")
    for version in report.removed:
        typer.echo(f"removed old version {version}")
    for version in report.cleaned:
        typer.echo(f"cleaned half-written version {version}")


@command("rollback")
def rollback_command(
    redis_url: Annotated[str, typer.Option("--redis", help=REDIS_HELP)],
    to: Annotated[
        str | None, typer.Option(help="Version or model fingerprint (default: the previous).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Switch the current version back to the previous kept one (or to --to)."""
    result = rollback(redis_url, to)
    if json:
        print_json(result)
        return
    typer.echo(f"current version {result['current']} (was {result['previous']})")
