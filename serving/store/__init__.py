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
from serving.store.naming import pushed_version_of, store_fingerprint
from serving.store.pin import PIN_FILE, clear_pin, read_pin, write_pin
from serving.store.publish import PublishReport, publish
from serving.store.reader import LoadedVersion, Lookup, StoreReader
from serving.store.rollback import rollback, unpin

__all__ = [
    "DEFAULT_BATCH",
    "PIN_FILE",
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
    "clear_pin",
    "connect",
    "load_index_catalog",
    "publish",
    "publish_index",
    "pushed_version_of",
    "read_pin",
    "redacted",
    "rollback",
    "store_fingerprint",
    "unpin",
    "write_pin",
]
