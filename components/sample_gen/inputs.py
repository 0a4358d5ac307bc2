"""The inputs of sample building: item vectors and interaction logs, read and checked."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from components.common.errors import DataError
from components.common.files import file_sha256, read_json
from components.common.interactions import (
    check_interactions,
    is_interactions_table,
    read_interactions,
)
from components.common.names import (
    ITEM_VECTORS_BINARY,
    ITEM_VECTORS_TEXT,
    MANIFEST_FILE,
    USER_VECTORS_BINARY,
    USER_VECTORS_TEXT,
)
from components.common.vectors import Vectors, read_vectors


def load_item_vectors(path: str | Path) -> tuple[Vectors, Path]:
    """Read item vectors from a pretrain directory (binary preferred) or a vector file."""
    path = Path(path)
    if not path.is_dir():
        return read_vectors(path), path
    candidates = [path / ITEM_VECTORS_BINARY, path / ITEM_VECTORS_TEXT]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise DataError("no item_vectors.bin or item_vectors.txt here", path)
    vectors = read_vectors(found)
    for other in (path / USER_VECTORS_BINARY, path / USER_VECTORS_TEXT):
        if other.exists():
            with open(other, "rb") as f:
                header = f.readline().split()
            if len(header) == 2 and int(header[1]) != vectors.dim:
                raise DataError(
                    f"vector files of mixed sizes: {found.name} has {vectors.dim} dimensions, "
                    f"{other.name} has {int(header[1])}",
                    path,
                )
    if vectors.ids is None:
        raise DataError("item vectors need ids (a word2vec file, not .npy)", found)
    return vectors, found


def read_log(log: str | Path | pa.Table) -> tuple[pa.Table, dict]:
    """The checked log, and what the manifest records of it (path and sha256, or rows)."""
    if isinstance(log, pa.Table):
        return check_interactions(log), {"kind": "table", "rows": log.num_rows}
    path = Path(log)
    info = {"path": str(path.resolve()), "sha256": file_sha256(path)} if path.exists() else {}
    return read_interactions(path), info


def above_min_weight(log: pa.Table, min_weight: float | None) -> tuple[pa.Table, int]:
    """The log without events below `min_weight`, and how many those were."""
    if min_weight is None:
        return log, 0
    if "weight" not in log.column_names:
        raise DataError("min_weight is set but the target log has no weight (or rating)")
    keep = log["weight"].to_numpy() >= min_weight
    return log.filter(pa.array(keep)), int((~keep).sum())


def pretrained_source(vectors_dir: Path) -> Path | None:
    """The interaction log the vectors were pretrained on, if the manifest names one."""
    manifest = vectors_dir / MANIFEST_FILE
    if not manifest.exists():
        return None
    source = read_json(manifest).get("input", {})
    path = source.get("path")
    if source.get("kind") == "interactions" and path and is_interactions_table(path):
        return Path(path) if Path(path).exists() else None
    return None
