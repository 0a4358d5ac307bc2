"""The `finetower` command: a thin layer, each command one call into the library."""

from finetower.cli import (  # noqa: F401  (registers commands)
    data,
    demo,
    model_tools,
    report,
    retrieval,
    serve,
    store,
    training,
)
from finetower.cli.app import app

__all__ = ["app"]
