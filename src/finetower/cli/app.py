"""The typer app and the one decorator every command uses to turn errors into messages."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from finetower.errors import FinetowerError

app = typer.Typer(
    name="finetower",
    help="Two-tower (DSSM) retrieval fine-tuned from pretrained embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)


def command(name: str | None = None, **kwargs: Any) -> Callable:
    """Register a CLI command; a FinetowerError becomes a one-line message and exit code 2."""

    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **inner: Any) -> Any:
            try:
                return function(*args, **inner)
            except FinetowerError as error:
                console.print(f"[bold red]error:[/] {error}", highlight=False)
                raise typer.Exit(2) from None

        app.command(name, **kwargs)(wrapper)
        return function

    return register


def print_json(data: Any) -> None:
    """Print machine-readable output on stdout (every result-printing command has --json)."""
    sys.stdout.write(json.dumps(data) + "\n")
