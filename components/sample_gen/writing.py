"""Writing one split's samples (text, ids, a sink such as tf.Examples) and the tables that
evaluation reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common.names import CATALOGUE_TABLE, HISTORIES_TABLE, interactions_table
from components.common.user_vectors import HistoryIndex
from components.common.vectors import Vectors
from components.sample_gen.config import SPLITS, SampleConfig
from components.sample_gen.recipe_text import write_text_samples

CHUNK_ROWS = 1 << 16


@dataclass
class SampleRows:
    """A chunk of one split's samples, rows in their written (shuffled) order: `labels [n]`
    int64, `user_vectors [n, U]` and `item_vectors [n, I]` float32, and the ids."""

    labels: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_ids: pa.Array
    item_ids: pa.Array

    def __len__(self) -> int:
        return len(self.labels)


# receives (split name, rows) for every chunk of every split, e.g. to write tf.Examples
SampleSink = Callable[[str, SampleRows], None]


@dataclass
class Positives:
    """A split's kept positives: user codes, item rows, times, and their user vectors."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_vectors: np.ndarray


def write_split(
    out: Path,
    name: str,
    positives: Positives,
    negatives: np.ndarray,
    item_vectors: Vectors,
    user_ids: pa.Array,
    config: SampleConfig,
    rng: np.random.Generator,
    sink: SampleSink | None = None,
) -> dict:
    """Write one split, rows shuffled: text samples (if asked) and each row's ids in Parquet;
    hand the same rows to `sink` (if given) in chunks.

    `{name}_ids.parquet` holds row by row what `{name}.txt` holds as vectors: the label, the
    user and item ids, and the time the user vector is taken at (models with ID embeddings
    need the ids; `query_user_vectors` over `histories.parquet` gives the user vector back,
    except for users without history under `missing_user="mean"`)."""
    n_pos, k = negatives.shape
    query = np.concatenate([np.arange(n_pos), np.repeat(np.arange(n_pos), k)])
    items = np.concatenate([positives.items, negatives.reshape(-1)])
    labels = np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_pos * k, np.float32)])
    keep = items >= 0
    order = rng.permutation(np.flatnonzero(keep))
    counts = {
        "rows": len(order),
        "positives": n_pos,
        "negatives": int(keep.sum()) - n_pos,
        "negatives_unavailable": int((~keep).sum()),
    }
    item_ids = pa.array(item_vectors.ids, pa.string())
    text_path = out / f"{name}.txt"
    if config.text:
        text_path.write_bytes(b"")
    for start in range(0, len(order) if config.text or sink else 0, CHUNK_ROWS):
        rows = order[start : start + CHUNK_ROWS]
        users = positives.user_vectors[query[rows]]  # gathered once for text and sink
        vectors = item_vectors.vectors[items[rows]]
        if config.text:
            write_text_samples(text_path, labels[rows], users, vectors, append=True)
        if sink is not None:
            chunk = SampleRows(
                labels=labels[rows].astype(np.int64),
                user_vectors=users,
                item_vectors=vectors,
                user_ids=user_ids.take(pa.array(positives.users[query[rows]])),
                item_ids=item_ids.take(pa.array(items[rows])),
            )
            sink(name, chunk)
    pq.write_table(
        pa.table(
            {
                "label": pa.array(labels[order].astype(np.int8)),
                "user": user_ids.take(pa.array(positives.users[query[order]])),
                "item": item_ids.take(pa.array(items[order])),
                "timestamp": pa.array(positives.times[query[order]]),
            }
        ),
        out / f"{name}_ids.parquet",
    )
    return counts


def write_tables(
    out: Path,
    vocabulary: pa.Array,
    item_vectors: Vectors,
    events,
    history: HistoryIndex,
) -> None:
    """Write each split's target events and the histories evaluation needs for query vectors."""
    item_ids = pa.array(item_vectors.ids, pa.string())
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(events.split == code)
        table = pa.table(
            {
                "user": vocabulary.take(pa.array(events.users[rows])),
                "item": item_ids.take(pa.array(events.items[rows])),
                "timestamp": pa.array(events.times[rows]),
            }
        )
        pq.write_table(table, out / interactions_table(name))
    pq.write_table(
        pa.table(
            {
                "user": vocabulary.take(pa.array(history.user_codes)),
                "item": item_ids.take(pa.array(history.item_rows)),
                "timestamp": pa.array(history.timestamps),
            }
        ),
        out / HISTORIES_TABLE,
    )


def write_catalogue_table(
    out: Path, item_vectors: Vectors, catalogue: np.ndarray, train_counts: np.ndarray
) -> None:
    """`catalogue.parquet`: the target items with a vector, and their train counts."""
    item_ids = pa.array(item_vectors.ids, pa.string())
    pq.write_table(
        pa.table({"item": item_ids.take(pa.array(catalogue)), "train_count": train_counts}),
        out / CATALOGUE_TABLE,
    )
