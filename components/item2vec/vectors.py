"""Moved to `components.common.vectors` (shared with sample_gen); kept so that callers outside
the pipeline stages (serving/) keep working until they import it from there."""

from components.common.vectors import *  # noqa: F403
