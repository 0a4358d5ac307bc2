"""Fine-tuning samples for the target domain, with user vectors that never see the future.

From a target interaction log and pretrained item vectors, `build_samples` writes
    train.txt val.txt test.txt       samples in the recipe's text format (headerless CSV
                                     `label,u_1..u_U,i_1..i_I`), rows shuffled
    {train,val,test}_ids.parquet     the same rows' ids, row by row: label, user, item, and
                                     timestamp (the time the user vector is taken at)
    {train,val,test}_interactions.parquet   the target events of each split
    histories.parquet                what user vectors are made of: source events and
                                     target train events with an item vector
                                     (user, item, timestamp), for `query_user_vectors`
    catalogue.parquet                target items with a vector, and their train counts
    manifest.json                    inputs' sha256, parameters, counts and coverage

Each positive is a target event; `negatives` items per positive are drawn from the
catalogue (uniformly, or by train popularity^0.75), never an item the user has in the
target log. A sample's user vector is the mean of the user's last `last_n` items with a
vector (`components.common.user_vectors.user_vector`) among events *strictly before* the
sample's time: source events, and target events of the train split. Held-out events
never enter a user vector, and neither does anything at or after the sample's time.

Split by "time": each user's last `test_size` events are test and the `val_size` before
them validation, always leaving a user at least one train event (users with too few
events hold out fewer; counted). Split "random": each event is test with probability
`test_size`, else validation with probability `val_size`. Both are seeded.

Coverage, counted in the manifest, never silent:
- target events whose item has no pretrained vector are dropped before the split;
- history events whose item has no vector are skipped (as `user_vector` does);
- a positive whose user has no history with a vector before its time is dropped with its
  negatives (`missing_user="drop"`) or gets the mean item vector (`missing_user="mean"`);
- a user whose target items cover the whole catalogue gets no negatives (counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.common.errors import DataError
from components.common.files import atomic_dir, file_sha256, write_json
from components.common.histories import codes, query_user_vectors, rows_of
from components.common.names import MANIFEST_FILE
from components.common.user_vectors import HistoryIndex, sorted_unique
from components.common.vectors import Vectors
from components.sample_gen.config import SPLITS, SampleConfig
from components.sample_gen.holdout import split_events
from components.sample_gen.inputs import (
    above_min_weight,
    load_item_vectors,
    pretrained_source,
    read_log,
)
from components.sample_gen.negatives import popularity_weights, sample_negatives
from components.sample_gen.writing import (
    Positives,
    SampleRows,
    SampleSink,
    write_catalogue_table,
    write_split,
    write_tables,
)

# what callers import from here
__all__ = [
    "SampleConfig",
    "SampleRows",
    "SampleSink",
    "build_samples",
    "load_item_vectors",
    "query_user_vectors",
    "sample_negatives",
]

FORMAT = "finetower.training-data/2"


@dataclass
class TargetEvents:
    """Target events with an item vector, sorted by (user, time): user codes, item rows,
    times, split codes (0 train, 1 val, 2 test), and what was dropped or held out less."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    split: np.ndarray
    has_vector: np.ndarray  # per row of the target log (before sorting)
    short_users: int


def target_events(
    log: pa.Table, vocabulary: pa.Array, item_vectors: Vectors, config: SampleConfig
) -> TargetEvents:
    """The target log's events sorted and split; events whose item has no vector leave."""
    users = codes(log["user"], vocabulary)
    items = rows_of(log["item"], item_vectors)
    times = log["timestamp"].to_numpy()
    has_vector = items >= 0
    order = np.lexsort((times, users))
    order = order[has_vector[order]]
    if len(order) == 0:
        raise DataError(
            "the target domain is empty: no target event (at or above min_weight) has an "
            "item with a pretrained vector"
        )
    users, items, times = users[order], items[order], times[order]
    split, short_users = split_events(users, config, np.random.default_rng([config.seed, 0]))
    return TargetEvents(users, items, times, split, has_vector, short_users)


def history_index(
    events: TargetEvents, source_log: pa.Table | None, vocabulary: pa.Array, vectors: Vectors
) -> tuple[HistoryIndex, int]:
    """What user vectors are made of: source events (first on equal times), then target
    train events; and how many source events have no item vector."""
    logs = [(events.users, events.items, events.times, events.split == 0)]
    without_vector = 0
    if source_log is not None:
        items = rows_of(source_log["item"], vectors)
        without_vector = int((items < 0).sum())
        users = codes(source_log["user"], vocabulary)
        logs.insert(0, (users, items, source_log["timestamp"].to_numpy(), items >= 0))
    index = HistoryIndex(
        *(np.concatenate([log[i][log[3]] for log in logs]) for i in range(3)),
        n_users=len(vocabulary),
    )
    return index, without_vector


@dataclass
class NegativePool:
    """Catalogue item rows negatives are drawn from, their weights, and every user's
    positives as sorted keys `user * stride + item`."""

    catalogue: np.ndarray
    train_counts: np.ndarray
    weights: np.ndarray | None
    positive_keys: np.ndarray
    stride: int

    @classmethod
    def of(cls, events: TargetEvents, n_items: int, config: SampleConfig) -> NegativePool:
        catalogue = sorted_unique(events.items)
        train = events.items[events.split == 0]
        train_counts = np.bincount(train, minlength=n_items)[catalogue]
        weights = (
            popularity_weights(train_counts) if config.negative_sampling == "popularity" else None
        )
        keys = sorted_unique(events.users * n_items + events.items)
        return cls(catalogue, train_counts, weights, keys, n_items)


def _build_split(
    out: Path,
    code: int,
    events: TargetEvents,
    history: HistoryIndex,
    pool: NegativePool,
    item_vectors: Vectors,
    vocabulary: pa.Array,
    config: SampleConfig,
    sink: SampleSink | None,
) -> dict:
    """Positives of one split with their user vectors, their negatives, written; the counts."""
    rows = np.flatnonzero(events.split == code)
    vectors_at, has_history = history.user_vectors(
        item_vectors.vectors,
        events.users[rows],
        events.times[rows],
        last_n=config.last_n,
        half_life=config.half_life,
    )
    if config.missing_user == "mean":
        vectors_at[~has_history] = item_vectors.vectors.mean(axis=0)
        kept = np.arange(len(rows))
    else:
        kept = np.flatnonzero(has_history)
    positives = Positives(
        events.users[rows][kept],
        events.items[rows][kept],
        events.times[rows][kept],
        vectors_at[kept],
    )
    rng = np.random.default_rng([config.seed, 1, code])
    negatives = sample_negatives(
        rng,
        positives.users,
        config.negatives,
        pool.catalogue,
        pool.weights,
        pool.positive_keys,
        pool.stride,
    )
    counts = write_split(
        out, SPLITS[code], positives, negatives, item_vectors, vocabulary, config, rng, sink
    )
    counts["positives_without_user_history"] = int((~has_history).sum())
    counts["events"] = len(rows)
    return counts


def build_samples(
    target: str | Path | pa.Table,
    vectors: str | Path,
    out_dir: str | Path,
    *,
    source: str | Path | pa.Table | None = "pretrained",
    config: SampleConfig | None = None,
    sink: SampleSink | None = None,
) -> dict:
    """Build train/val/test samples for the target domain into `out_dir`; return the manifest.

    `source` is the source-domain log whose history feeds user vectors: a path or table,
    "pretrained" for the log named in the vectors' manifest (none if it names no table),
    or None for target history only. `sink(split, rows)` also receives every split's rows
    (in chunks, in the order they are written), e.g. to write them as tf.Examples.
    """
    config = config or SampleConfig()
    vectors_path = Path(vectors)
    item_vectors, vectors_file = load_item_vectors(vectors_path)
    target_log, target_info = read_log(target)
    if isinstance(source, str) and source == "pretrained":
        source = pretrained_source(vectors_path) if vectors_path.is_dir() else None
    source_log, source_info = read_log(source) if source is not None else (None, None)
    target_log, below_weight = above_min_weight(target_log, config.min_weight)
    logs = [target_log] + ([source_log] if source_log is not None else [])
    vocabulary = pc.unique(pa.chunked_array([c for lg in logs for c in lg["user"].chunks]))

    events = target_events(target_log, vocabulary, item_vectors, config)
    history, source_without_vector = history_index(events, source_log, vocabulary, item_vectors)
    pool = NegativePool.of(events, len(item_vectors), config)
    with atomic_dir(out_dir) as out:
        counts = {
            name: _build_split(
                out, code, events, history, pool, item_vectors, vocabulary, config, sink
            )
            for code, name in enumerate(SPLITS)
        }
        write_tables(out, vocabulary, item_vectors, events, history)
        write_catalogue_table(out, item_vectors, pool.catalogue, pool.train_counts)
        inputs = {"target": target_info, "source": source_info, "vectors": file_info(vectors_file)}
        coverage = {
            **_coverage(target_log, below_weight, events),
            "source_events_item_without_vector": source_without_vector,
            "users_holding_out_fewer": events.short_users,
            "missing_user_fallback": config.missing_user,
            "source_history": source_info is not None,
        }
        manifest = samples_manifest(inputs, config, item_vectors.dim, counts, coverage, pool)
        write_json(out / MANIFEST_FILE, manifest)
    return manifest


def file_info(path: Path) -> dict:
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def _coverage(target_log: pa.Table, below_weight: int, events: TargetEvents) -> dict:
    """What of the target log could not become a positive, counted."""
    return {
        "target_events": target_log.num_rows + below_weight,
        "target_events_below_min_weight": below_weight,
        "target_events_item_without_vector": int((~events.has_vector).sum()),
        "target_items_without_vector": len(
            pc.unique(target_log["item"].filter(pa.array(~events.has_vector)))
        ),
    }


def samples_manifest(
    inputs: dict, config: SampleConfig, dim: int, counts: dict, coverage: dict, pool: NegativePool
) -> dict:
    """What `build_samples` records: inputs, parameters, counts per split and coverage."""
    return {
        "format": FORMAT,
        "inputs": inputs,
        "parameters": {
            **asdict(config),
            "val_size": config.holdout[0],
            "test_size": config.holdout[1],
        },
        "dim": dim,
        "splits": counts,
        "coverage": coverage,
        "catalogue_items": len(pool.catalogue),
    }
