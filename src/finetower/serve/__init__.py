"""The recall service: `POST /recall`, `GET /health`, `GET /metrics` (see `service`)."""

from finetower.serve.app import create_app, serve
from finetower.serve.metrics import Metrics
from finetower.serve.service import (
    API_KEY_ENV,
    DEFAULT_POLL_S,
    HISTORY_VECTORS,
    MAX_HISTORY,
    MAX_K,
    RecallRequest,
    RecallService,
    Snapshot,
    top_k,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_POLL_S",
    "HISTORY_VECTORS",
    "MAX_HISTORY",
    "MAX_K",
    "Metrics",
    "RecallRequest",
    "RecallService",
    "Snapshot",
    "create_app",
    "serve",
    "top_k",
]
