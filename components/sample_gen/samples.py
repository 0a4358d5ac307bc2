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
vector (`components.item2vec.user_vectors.user_vector`) among events *strictly before* the
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

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import DataError
from components.common.files import atomic_dir, file_sha256, read_json, write_json
from components.item2vec.user_vectors import DEFAULT_LAST_N, HistoryIndex, sorted_unique
from components.item2vec.vectors import Vectors, read_vectors
from components.sample_gen.interactions import (
    check_interactions,
    is_interactions_table,
    read_interactions,
)
from components.sample_gen.recipe_text import write_text_samples

FORMAT = "finetower.training-data/2"
SPLITS = ("train", "val", "test")
CHUNK_ROWS = 1 << 16
NEGATIVE_ROUNDS = 16
POPULARITY_EXPONENT = 0.75


@dataclass(frozen=True)
class SampleConfig:
    """How samples are built; see the module docstring for the meaning of each option."""

    negatives: int = 4
    negative_sampling: str = "uniform"  # | "popularity" (train counts ^ 0.75)
    split: str = "time"  # | "random"
    val_size: float | None = None  # time: events per user (1); random: a fraction (0.1)
    test_size: float | None = None
    last_n: int | None = DEFAULT_LAST_N
    half_life: float | None = None
    missing_user: str = "drop"  # | "mean"
    min_weight: float | None = None  # target events below this weight are not positives
    text: bool = True  # False: no .txt files (the ids and interaction tables still)
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("negative_sampling", self.negative_sampling, ("uniform", "popularity"))
        _one_of("split", self.split, ("time", "random"))
        _one_of("missing_user", self.missing_user, ("drop", "mean"))
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")
        if self.last_n is not None and self.last_n < 1:
            raise ValueError(f"last_n must be at least 1 (or None), got {self.last_n}")
        if self.half_life is not None and self.half_life <= 0:
            raise ValueError(f"half_life must be positive, got {self.half_life}")
        val, test = self.holdout
        if self.split == "time" and not (float(val).is_integer() and float(test).is_integer()):
            raise ValueError("with split='time', val_size and test_size count events per user")
        if val < 0 or test < 0:
            raise ValueError("val_size and test_size must be >= 0")
        if self.split == "random" and val + test >= 1:
            raise ValueError("with split='random', val_size + test_size must be a fraction < 1")

    @property
    def holdout(self) -> tuple[float, float]:
        """(val_size, test_size) with the split's defaults filled in."""
        default = 1 if self.split == "time" else 0.1
        return (
            default if self.val_size is None else self.val_size,
            default if self.test_size is None else self.test_size,
        )


def _one_of(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def query_user_vectors(
    histories: pa.Table,
    item_vectors: Vectors,
    users: list[str] | pa.Array,
    times: np.ndarray,
    *,
    last_n: int | None = DEFAULT_LAST_N,
    half_life: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """User vectors at query times from a `histories.parquet` table: (vectors, has_history)."""
    vocabulary = pc.unique(pa.concat_arrays([histories["user"].combine_chunks(), pa.array(users)]))
    rows = _rows_of(histories["item"], item_vectors)
    known = rows >= 0
    index = HistoryIndex(
        _codes(histories["user"], vocabulary)[known],
        rows[known],
        histories["timestamp"].to_numpy()[known],
        len(vocabulary),
    )
    return index.user_vectors(
        item_vectors.vectors,
        _codes(pa.array(users), vocabulary),
        np.asarray(times, np.int64),
        last_n=last_n,
        half_life=half_life,
    )


def _codes(column: pa.Array | pa.ChunkedArray, vocabulary: pa.Array) -> np.ndarray:
    return pc.index_in(column, value_set=vocabulary).to_numpy(zero_copy_only=False).astype(np.int64)


def _rows_of(items: pa.Array | pa.ChunkedArray, vectors: Vectors) -> np.ndarray:
    """Row of each item id in `vectors`, -1 when it has none."""
    rows = pc.index_in(items, value_set=pa.array(vectors.ids, pa.string()))
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def split_events(
    user_codes: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Return (split [n]: 0 train, 1 val, 2 test; users holding out fewer than asked).

    `user_codes` must be sorted with each user's events oldest first.
    """
    val, test = config.holdout
    n = len(user_codes)
    if config.split == "random":
        draw = rng.random(n)
        return np.where(draw < test, 2, np.where(draw < test + val, 1, 0)).astype(np.int8), 0
    starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(n)
    held = np.minimum(lengths - 1, int(val + test))
    n_test = np.minimum(held, int(test))
    held, n_test = np.repeat(held, lengths), np.repeat(n_test, lengths)
    split = np.where(from_end < n_test, 2, np.where(from_end < held, 1, 0)).astype(np.int8)
    return split, int((lengths - 1 < val + test).sum())


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    count: int,
    catalogue: np.ndarray,
    weights: np.ndarray | None,
    positive_keys: np.ndarray,
    stride: int,
) -> np.ndarray:
    """Return [len(users), count] item rows from `catalogue`, none a key in `positive_keys`.

    `positive_keys` (sorted) holds user * stride + item of every user's positives. Draws
    that hit one are redrawn in rounds; users left after the rounds (a catalogue mostly
    their own) get an exact draw from their complement, or -1 when it is empty.
    """
    p = None if weights is None else weights / weights.sum()
    owners = np.repeat(users, count)
    drawn = rng.choice(catalogue, size=len(owners), p=p)

    def hits(rows: np.ndarray) -> np.ndarray:
        keys = owners[rows] * stride + drawn[rows]
        found = np.searchsorted(positive_keys, keys)
        found = np.minimum(found, len(positive_keys) - 1)
        return positive_keys[found] == keys

    todo = np.arange(len(owners))
    for _ in range(NEGATIVE_ROUNDS):
        todo = todo[hits(todo)]
        if len(todo) == 0:
            return drawn.reshape(len(users), count)
        drawn[todo] = rng.choice(catalogue, size=len(todo), p=p)
    todo = todo[hits(todo)]
    for user in np.unique(owners[todo]):
        rows = todo[owners[todo] == user]
        own = (
            positive_keys[
                np.searchsorted(positive_keys, user * stride) : np.searchsorted(
                    positive_keys, (user + 1) * stride
                )
            ]
            - user * stride
        )
        allowed = ~np.isin(catalogue, own)
        mass = allowed if weights is None else allowed * weights
        if mass.sum() == 0:
            drawn[rows] = -1
        else:
            drawn[rows] = rng.choice(catalogue, size=len(rows), p=mass / mass.sum())
    return drawn.reshape(len(users), count)


def load_item_vectors(path: str | Path) -> tuple[Vectors, Path]:
    """Read item vectors from a pretrain directory (binary preferred) or a vector file."""
    path = Path(path)
    if not path.is_dir():
        return read_vectors(path), path
    candidates = [path / "item_vectors.bin", path / "item_vectors.txt"]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise DataError("no item_vectors.bin or item_vectors.txt here", path)
    vectors = read_vectors(found)
    for other in (path / "user_vectors.bin", path / "user_vectors.txt"):
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


def _read_log(log: str | Path | pa.Table) -> tuple[pa.Table, dict]:
    if isinstance(log, pa.Table):
        return check_interactions(log), {"kind": "table", "rows": log.num_rows}
    path = Path(log)
    info = {"path": str(path.resolve()), "sha256": file_sha256(path)} if path.exists() else {}
    return read_interactions(path), info


def _above_min_weight(log: pa.Table, min_weight: float | None) -> tuple[pa.Table, int]:
    """The log without events below `min_weight`, and how many those were."""
    if min_weight is None:
        return log, 0
    if "weight" not in log.column_names:
        raise DataError("min_weight is set but the target log has no weight (or rating)")
    keep = log["weight"].to_numpy() >= min_weight
    return log.filter(pa.array(keep)), int((~keep).sum())


def _pretrained_source(vectors_dir: Path) -> Path | None:
    """The interaction log the vectors were pretrained on, if the manifest names one."""
    manifest = vectors_dir / "manifest.json"
    if not manifest.exists():
        return None
    source = read_json(manifest).get("input", {})
    path = source.get("path")
    if source.get("kind") == "interactions" and path and is_interactions_table(path):
        return Path(path) if Path(path).exists() else None
    return None


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
class _Positives:
    """A split's kept positives: user codes, item rows, times, and their user vectors."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_vectors: np.ndarray


def _write_split(
    out: Path,
    name: str,
    positives: _Positives,
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
    if config.text:
        text_path = out / f"{name}.txt"
        text_path.write_bytes(b"")
        for start in range(0, len(order), CHUNK_ROWS):
            rows = order[start : start + CHUNK_ROWS]
            write_text_samples(
                text_path,
                labels[rows],
                positives.user_vectors[query[rows]],
                item_vectors.vectors[items[rows]],
                append=True,
            )
    item_ids = pa.array(item_vectors.ids, pa.string())
    if sink is not None:
        for start in range(0, len(order), CHUNK_ROWS):
            rows = order[start : start + CHUNK_ROWS]
            sink(
                name,
                SampleRows(
                    labels=labels[rows].astype(np.int64),
                    user_vectors=positives.user_vectors[query[rows]],
                    item_vectors=item_vectors.vectors[items[rows]],
                    user_ids=user_ids.take(pa.array(positives.users[query[rows]])),
                    item_ids=item_ids.take(pa.array(items[rows])),
                ),
            )
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
    target_log, target_info = _read_log(target)
    if isinstance(source, str) and source == "pretrained":
        source = _pretrained_source(vectors_path) if vectors_path.is_dir() else None
    source_log, source_info = _read_log(source) if source is not None else (None, None)

    target_log, below_weight = _above_min_weight(target_log, config.min_weight)
    logs = [target_log] + ([source_log] if source_log is not None else [])
    vocabulary = pc.unique(pa.chunked_array([c for lg in logs for c in lg["user"].chunks]))

    # target events, sorted by (user, time); events whose item has no vector leave here
    t_users = _codes(target_log["user"], vocabulary)
    t_items = _rows_of(target_log["item"], item_vectors)
    t_times = target_log["timestamp"].to_numpy()
    has_vector = t_items >= 0
    order = np.lexsort((t_times, t_users))
    order = order[has_vector[order]]
    if len(order) == 0:
        raise DataError(
            "the target domain is empty: no target event (at or above min_weight) has an "
            "item with a pretrained vector"
        )
    t_users, t_items, t_times = t_users[order], t_items[order], t_times[order]
    split, short_users = split_events(t_users, config, np.random.default_rng([config.seed, 0]))

    # histories: source events first (they come first on equal times), then target train
    history_logs = [(t_users, t_items, t_times, split == 0)]
    source_without_vector = 0
    if source_log is not None:
        s_items = _rows_of(source_log["item"], item_vectors)
        source_without_vector = int((s_items < 0).sum())
        s_users = _codes(source_log["user"], vocabulary)
        history_logs.insert(0, (s_users, s_items, source_log["timestamp"].to_numpy(), s_items >= 0))
    history = HistoryIndex(
        *(np.concatenate([log[i][log[3]] for log in history_logs]) for i in range(3)),
        n_users=len(vocabulary),
    )

    catalogue = sorted_unique(t_items)
    train_counts = np.bincount(t_items[split == 0], minlength=len(item_vectors))[catalogue]
    weights = None
    if config.negative_sampling == "popularity":
        weights = train_counts.astype(np.float64) ** POPULARITY_EXPONENT
    stride = len(item_vectors)
    positive_keys = sorted_unique(t_users * stride + t_items)
    mean_item = item_vectors.vectors.mean(axis=0)

    counts: dict[str, dict] = {}
    with atomic_dir(out_dir) as out:
        for code, name in enumerate(SPLITS):
            rows = np.flatnonzero(split == code)
            vectors_at, has_history = history.user_vectors(
                item_vectors.vectors,
                t_users[rows],
                t_times[rows],
                last_n=config.last_n,
                half_life=config.half_life,
            )
            if config.missing_user == "mean":
                vectors_at[~has_history] = mean_item
                kept = np.arange(len(rows))
            else:
                kept = np.flatnonzero(has_history)
            positives = _Positives(
                t_users[rows][kept], t_items[rows][kept], t_times[rows][kept], vectors_at[kept]
            )
            rng = np.random.default_rng([config.seed, 1, code])
            negatives = sample_negatives(
                rng, positives.users, config.negatives, catalogue, weights, positive_keys, stride
            )
            counts[name] = _write_split(
                out, name, positives, negatives, item_vectors, vocabulary, config, rng, sink
            )
            counts[name]["positives_without_user_history"] = int((~has_history).sum())
            counts[name]["events"] = len(rows)
        _write_tables(out, vocabulary, item_vectors, t_users, t_items, t_times, split, history)
        item_ids = pa.array(item_vectors.ids, pa.string())
        pq.write_table(
            pa.table({"item": item_ids.take(pa.array(catalogue)), "train_count": train_counts}),
            out / "catalogue.parquet",
        )
        manifest = {
            "format": FORMAT,
            "inputs": {
                "target": target_info,
                "source": source_info,
                "vectors": {
                    "path": str(vectors_file.resolve()),
                    "sha256": file_sha256(vectors_file),
                },
            },
            "parameters": {
                **asdict(config),
                "val_size": config.holdout[0],
                "test_size": config.holdout[1],
            },
            "dim": item_vectors.dim,
            "splits": counts,
            "coverage": {
                "target_events": target_log.num_rows + below_weight,
                "target_events_below_min_weight": below_weight,
                "target_events_item_without_vector": int((~has_vector).sum()),
                "target_items_without_vector": len(
                    pc.unique(target_log["item"].filter(pa.array(~has_vector)))
                ),
                "source_events_item_without_vector": source_without_vector,
                "users_holding_out_fewer": short_users,
                "missing_user_fallback": config.missing_user,
                "source_history": source_info is not None,
            },
            "catalogue_items": len(catalogue),
        }
        write_json(out / "manifest.json", manifest)
    return manifest


def _write_tables(
    out: Path,
    vocabulary: pa.Array,
    item_vectors: Vectors,
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    split: np.ndarray,
    history: HistoryIndex,
) -> None:
    """Write each split's target events and the histories evaluation needs for query vectors."""
    item_ids = pa.array(item_vectors.ids, pa.string())
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(split == code)
        table = pa.table(
            {
                "user": vocabulary.take(pa.array(users[rows])),
                "item": item_ids.take(pa.array(items[rows])),
                "timestamp": pa.array(times[rows]),
            }
        )
        pq.write_table(table, out / f"{name}_interactions.parquet")
    pq.write_table(
        pa.table(
            {
                "user": vocabulary.take(pa.array(history.user_codes)),
                "item": item_ids.take(pa.array(history.item_rows)),
                "timestamp": pa.array(history.timestamps),
            }
        ),
        out / "histories.parquet",
    )
