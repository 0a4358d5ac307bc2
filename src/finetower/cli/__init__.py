"""The `finetower` command: a thin layer, each command one call into the library."""

from finetower.cli import data, demo, model_tools, store, training  # noqa: F401  (registers commands)
from finetower.cli.app import app

__all__ = ["app"]
