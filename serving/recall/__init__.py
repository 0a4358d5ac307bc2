"""The recall service: POST /recall (user vector or history -> the user tower over gRPC -> the
ANN index of the same pushed version -> top n with the model's probabilities), /health,
/metrics; optionally a sampled log of the user vectors it sent (`skew_log`).
`python -m serving.recall --help`."""

from serving.recall.app import RecallRequest, build_service, create_app, serve
from serving.recall.service import RecallError, RecallService
from serving.recall.skew_log import LogSettings, ServingLog
from serving.recall.snapshot import Snapshot, load_snapshot, top_items

__all__ = [
    "LogSettings",
    "RecallError",
    "RecallRequest",
    "RecallService",
    "ServingLog",
    "Snapshot",
    "build_service",
    "create_app",
    "load_snapshot",
    "serve",
    "top_items",
]
