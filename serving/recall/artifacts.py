"""Where a pushed version's files are, as the recall service reads them (no pipeline import).

    <serving_dir>/user_tower/<v>/saved_model.pb   the Pusher's towers (TF Serving's layout)
    <output_dir>/ann_index/<v>/                   index, ids.json, item_vectors.npy, manifest.json
    <output_dir>/item_embeddings/<v>/             embeddings.parquet, manifest.json

The names come from `components.common.names`, the table's reading from
`components.common.embeddings_table` (what ItemEmbeddings writes with); this module reads local
files only, without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from components.common.embeddings_table import read_ids_and_embeddings
from components.common.errors import ArtifactError
from components.common.names import (
    ANN_DIR,
    EMBEDDINGS_FILE,
    ITEM_EMBEDDINGS_DIR,
    MANIFEST_FILE,
    SAVED_MODEL_FILE,
    USER_TOWER,
)


def ann_dir_for(output_dir: str | Path, version: int) -> Path:
    """`<output_dir>/ann_index/<version>`; a local folder (faiss and annoy read local files)."""
    if "://" in str(output_dir):
        raise ArtifactError(f"the ANN index needs a local output_dir, not {output_dir}")
    return Path(output_dir) / ANN_DIR / str(int(version))


def item_embeddings_dir_for(output_dir: str | Path, version: int) -> Path:
    return Path(output_dir) / ITEM_EMBEDDINGS_DIR / str(int(version))


def pushed_user_tower(serving_dir: str | Path, version: int) -> Path:
    """The SavedModel file of a pushed user tower version."""
    return Path(serving_dir) / USER_TOWER / str(int(version)) / SAVED_MODEL_FILE


def complete_versions(output_dir: str | Path) -> list[int]:
    """Versions with both an ANN index and item embeddings in place, ascending."""
    root = Path(output_dir) / ANN_DIR
    if not root.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in root.iterdir()
        if entry.name.isdigit()
        and (entry / MANIFEST_FILE).exists()
        and (item_embeddings_dir_for(output_dir, int(entry.name)) / MANIFEST_FILE).exists()
    )


def read_item_embeddings(folder: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(ids, embeddings [n, d] float32, manifest) of an item embeddings folder."""
    folder = Path(folder)
    for name in (EMBEDDINGS_FILE, MANIFEST_FILE):
        if not (folder / name).exists():
            raise ArtifactError(f"{folder} holds no {name}: not an item embeddings folder")
    path = str(folder / EMBEDDINGS_FILE)
    ids, embeddings = read_ids_and_embeddings(path, path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    return ids, embeddings, manifest
