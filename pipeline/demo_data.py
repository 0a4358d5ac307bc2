"""The embedded default: a seeded synthetic data set in the recipe's format.

Like real pretrained inputs, items come from a catalogue (each item has one vector, so item
ids repeat across samples), vectors are low-rank tastes seen through a fixed map plus noise,
with a per-dimension offset and unequal spread, and a sample is a click when the user's and
the item's tastes agree (a noisy dot product): a hidden rule the recipe can learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


@dataclass(frozen=True)
class DemoData:
    rows: int = 50_000
    items: int = 2_000
    user_dim: int = 128
    item_dim: int = 128
    taste_dim: int = 8
    noise: float = 0.5
    seed: int = 0


def _world(config: DemoData):
    rng = np.random.default_rng(config.seed)
    user_map = rng.normal(size=(config.taste_dim, config.user_dim))
    item_map = rng.normal(size=(config.taste_dim, config.item_dim))
    # unequal per-dimension spread and offsets, as pretrained vectors have
    user_scale = rng.uniform(0.02, 0.3, size=config.user_dim)
    item_scale = rng.uniform(0.02, 0.3, size=config.item_dim)
    user_offset = rng.normal(scale=0.1, size=config.user_dim)
    item_offset = rng.normal(scale=0.1, size=config.item_dim)
    item_taste = rng.normal(size=(config.items, config.taste_dim))
    item_vectors = item_taste @ item_map + rng.normal(scale=0.5, size=item_map.shape[1:])
    item_vectors = item_vectors / np.sqrt(config.taste_dim) * item_scale + item_offset
    return rng, user_map, user_scale, user_offset, item_taste, item_vectors.astype(np.float32)


def demo_samples(config: DemoData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels [n], users [n, U], items [n, I], item_vectors [items, I]) for `config`."""
    rng, user_map, user_scale, user_offset, item_taste, item_vectors = _world(config)
    n = config.rows
    user_taste = rng.normal(size=(n, config.taste_dim))
    users = user_taste @ user_map + rng.normal(scale=0.5, size=(n, config.user_dim))
    users = users / np.sqrt(config.taste_dim) * user_scale + user_offset
    item_rows = rng.integers(0, config.items, size=n)
    affinity = np.einsum("nd,nd->n", user_taste, item_taste[item_rows]) / np.sqrt(config.taste_dim)
    labels = (affinity + rng.normal(scale=config.noise, size=n) > 0).astype(np.int64)
    return labels, users.astype(np.float32), item_vectors[item_rows], item_vectors


def write_recipe_csv(path: str | Path, labels, users, items) -> Path:
    """Write samples as the recipe's headerless `label,u..,i..` lines (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [pa.array(labels.astype(np.int64))]
    columns += [pa.array(users[:, j]) for j in range(users.shape[1])]
    columns += [pa.array(items[:, j]) for j in range(items.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"f{j}" for j in range(len(columns))])
    tmp = path.with_name(f".{path.name}.tmp")
    pacsv.write_csv(table, tmp, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.replace(path)
    return path


def write_item_catalogue(path: str | Path, item_vectors: np.ndarray) -> Path:
    """Write the catalogue as CSV `item_id,v_1..v_I` (ids `item-<row>`), atomically."""
    path = Path(path)
    ids = pa.array([f"item-{i}" for i in range(len(item_vectors))])
    columns = [ids] + [pa.array(item_vectors[:, j]) for j in range(item_vectors.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"f{j}" for j in range(len(columns))])
    tmp = path.with_name(f".{path.name}.tmp")
    pacsv.write_csv(table, tmp, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.replace(path)
    return path


def ensure_demo_data(data_dir: str | Path, config: DemoData = DemoData()) -> dict[str, Path]:
    """Write the demo's train, eval and catalogue files under `data_dir` unless present.

    Written only when absent: TFX's cache fingerprints files by size and mtime, so rewriting
    identical data would only make the next run look new.
    """
    data_dir = Path(data_dir)
    paths = {
        "train": data_dir / "train" / "train.csv",
        "eval": data_dir / "eval" / "eval.csv",
        "items": data_dir / "items.csv",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    labels, users, items, item_vectors = demo_samples(config)
    cut = int(len(labels) * 0.8)
    write_recipe_csv(paths["train"], labels[:cut], users[:cut], items[:cut])
    write_recipe_csv(paths["eval"], labels[cut:], users[cut:], items[cut:])
    write_item_catalogue(paths["items"], item_vectors)
    return paths
