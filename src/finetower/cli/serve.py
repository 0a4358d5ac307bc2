"""The `serve` command: the recall service under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetower.cli.app import command
from finetower.serve import API_KEY_ENV, DEFAULT_POLL_S, HISTORY_VECTORS, serve
from finetower.user_vectors import DEFAULT_LAST_N


@command("serve")
def serve_command(
    index_dir: Annotated[
        Path, typer.Option("--index", help="Index directory from `finetower index`.")
    ],
    redis_url: Annotated[
        str | None,
        typer.Option("--redis", help="Follow the store's current version at this Redis URL."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar=API_KEY_ENV,
            show_envvar=True,
            help="Required on every request (X-API-Key or Authorization: Bearer).",
        ),
    ] = None,
    models: Annotated[
        Path | None,
        typer.Option(help="Directory of runs or index directories: models of store versions."),
    ] = None,
    user_vectors: Annotated[
        Path | None, typer.Option(help="Pretrained user vectors for user_id (without --redis).")
    ] = None,
    last_n: Annotated[int, typer.Option(help="History items averaged (0: all).")] = DEFAULT_LAST_N,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between checks of the store's current version.")
    ] = DEFAULT_POLL_S,
    history_vectors: Annotated[
        str,
        typer.Option(
            help="With --redis: read history items' vectors per request from the store, "
            "or keep the version's copy in memory (no Redis on a request's path)."
        ),
    ] = "store",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve POST /recall, GET /health and GET /metrics over HTTP."""
    if history_vectors not in HISTORY_VECTORS:
        raise typer.BadParameter(f"--history-vectors takes one of {', '.join(HISTORY_VECTORS)}")
    serve(
        index_dir,
        redis_url=redis_url,
        host=host,
        port=port,
        api_key=api_key,
        models_dir=models,
        user_vectors=user_vectors,
        last_n=last_n or None,
        poll_interval_s=poll_interval,
        history_vectors=history_vectors,
        log_level=log_level,
    )
