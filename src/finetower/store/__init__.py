"""A versioned item store in Redis: publish a model's items, switch versions atomically,
roll back, read them online. `layout` says where everything lives in Redis."""

from finetower.store.catalog import IndexCatalog, load_index_catalog
from finetower.store.layout import (
    DEFAULT_BATCH,
    Keys,
    StoreError,
    StoreUnavailable,
    VersionNotFound,
    connect,
    redacted,
)
from finetower.store.publish import PublishReport, publish, rollback
from finetower.store.reader import LoadedVersion, Lookup, StoreReader

__all__ = [
    "DEFAULT_BATCH",
    "IndexCatalog",
    "Keys",
    "LoadedVersion",
    "Lookup",
    "PublishReport",
    "StoreError",
    "StoreReader",
    "StoreUnavailable",
    "VersionNotFound",
    "connect",
    "load_index_catalog",
    "publish",
    "redacted",
    "rollback",
]
