"""A versioned item store in Redis: publish a model's items, switch versions atomically,
roll back, read them online. `layout` says where everything lives in Redis."""

from serving.store.catalog import (
    IndexCatalog,
    catalog_manifest,
    load_index_catalog,
    publish_index,
)
from serving.store.layout import (
    DEFAULT_BATCH,
    Keys,
    StoreError,
    StoreUnavailable,
    VersionNotFound,
    connect,
    redacted,
)
from serving.store.publish import PublishReport, publish, rollback
from serving.store.reader import LoadedVersion, Lookup, StoreReader

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
    "catalog_manifest",
    "connect",
    "load_index_catalog",
    "publish",
    "publish_index",
    "redacted",
    "rollback",
]
