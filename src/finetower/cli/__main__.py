"""`python -m finetower.cli`: the same as the `finetower` command."""

from finetower.cli import app

app()
