"""item2vec: word2vec (skip-gram, negative sampling) over each user's items in time order.

Input is a sequences file (`user<TAB>item item item ...`, one user a line, oldest first)
or an interaction log (see `components.common.interactions`), whose rows are ordered
per user by time.
The output directory holds
    item_vectors.txt / .bin   word2vec format, loadable by gensim's KeyedVectors
    user_vectors.txt / .bin   each user's vector (`user_vectors.user_vector`:
                              mean of the last `last_n` items, optionally time-decayed)
    manifest.json             inputs' sha256, parameters, vocabulary and counts

Reproducibility: the same input, parameters and seed with `workers=1` give bit-identical
vectors, in any interpreter. gensim's docs ask for `workers=1` (threads interleave updates
in OS scheduling order) and, across interpreter launches, a fixed PYTHONHASHSEED, because
gensim 3 seeded each word's initial vector with Python's `hash()`. gensim 4 draws initial
vectors from numpy's generator seeded by `seed`, and the one remaining use of `hash()`
(`seeded_vector`) gets our `stable_hash` here, so PYTHONHASHSEED does not matter (a test
runs two interpreters with different hash seeds). `workers` > 1 is faster, not reproducible.
Log users are taken in id order, so shuffling a log's rows does not change the vectors.
"""

from __future__ import annotations

import importlib.metadata
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.common.errors import DataError
from components.common.files import atomic_dir, file_sha256, write_json
from components.common.interactions import (
    check_interactions,
    is_interactions_table,
    read_interactions,
)
from components.common.user_vectors import DEFAULT_LAST_N, user_vector
from components.common.vectors import VECTOR_DIM, Vectors, write_vectors

FORMAT = "finetower.pretrain/1"
# gensim's MAX_WORDS_IN_BATCH: its training loop ignores a sentence's tokens past this
MAX_SEQUENCE_ITEMS = 10_000
EXAMPLES = 10


@dataclass(frozen=True)
class PretrainConfig:
    """item2vec parameters (gensim's names) and how user vectors are formed."""

    dim: int = VECTOR_DIM
    window: int = 5
    min_count: int = 5
    epochs: int = 5
    negative: int = 5
    workers: int = 1
    seed: int = 0
    last_n: int | None = DEFAULT_LAST_N
    half_life: float | None = None
    min_weight: float | None = None  # drop events whose weight (rating) is below this

    def __post_init__(self) -> None:
        for name in ("dim", "window", "min_count", "epochs", "negative", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.last_n is not None and self.last_n < 1:
            raise ValueError(f"last_n must be at least 1 (or None), got {self.last_n}")
        if self.half_life is not None and self.half_life <= 0:
            raise ValueError(f"half_life must be positive, got {self.half_life}")


@dataclass
class Sequences:
    """Users and their items, oldest first, with what reading them counted."""

    users: list[str]
    items: list[list[str]]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class PretrainResult:
    item_vectors: Vectors
    user_vectors: Vectors
    manifest: dict


def stable_hash(text: str) -> int:
    """A hash that is the same in every interpreter (gensim's `hashfxn`)."""
    return zlib.crc32(text.encode("utf-8"))


def read_sequences(path: str | Path) -> Sequences:
    """Read `user<TAB>item item ...` lines; a repeated user or a line without a tab is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    users: list[str] = []
    items: list[list[str]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            user, tab, rest = line.rstrip("\r\n").partition("\t")
            if not tab or not user:
                raise DataError("expected 'user<TAB>item item ...'", path, line_number)
            if user in seen:
                raise DataError(
                    f"user {user!r} already had a line (line {seen[user]}); "
                    "give each user one line with all items in order",
                    path,
                    line_number,
                )
            seen[user] = line_number
            users.append(user)
            items.append(rest.split())
    if not users:
        raise DataError("no sequences in the file", path)
    return Sequences(users, items, {"tied_timestamps": 0, "below_min_weight": 0})


def sequences_from_log(log: pa.Table, min_weight: float | None = None) -> Sequences:
    """Group a checked log into per-user sequences by time (stably), users in id order."""
    below = 0
    if min_weight is not None:
        if "weight" not in log.column_names:
            raise DataError("min_weight is set but the log has no weight (or rating) column")
        keep = log["weight"].to_numpy() >= min_weight
        below = int((~keep).sum())
        log = log.filter(pa.array(keep))
        if log.num_rows == 0:
            raise DataError(f"no event has a weight of at least {min_weight}")
    # users in id order, so the result does not depend on the order of the rows
    names = pc.unique(log["user"])
    names = names.take(pc.array_sort_indices(names))
    user_codes = pc.index_in(log["user"], value_set=names).to_numpy()
    timestamps = log["timestamp"].to_numpy()
    order = np.lexsort((timestamps, user_codes))  # stable: equal times keep file order
    codes, timestamps = user_codes[order], timestamps[order]
    items = log["item"].to_numpy(zero_copy_only=False)[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    same_user = codes[1:] == codes[:-1]
    tied = int((same_user & (timestamps[1:] == timestamps[:-1])).sum())
    return Sequences(
        users=names.take(pa.array(codes[starts])).to_pylist(),
        items=[part.tolist() for part in np.split(items, starts[1:])],
        counts={"tied_timestamps": tied, "below_min_weight": below},
    )


def _corpus(sequences: Sequence[list[str]]) -> tuple[list[list[str]], int]:
    """Cut sequences to gensim's 10,000-token limit (it ignores tokens past it silently)."""
    corpus, cut = [], 0
    for items in sequences:
        if len(items) <= MAX_SEQUENCE_ITEMS:
            corpus.append(items)
            continue
        cut += 1
        corpus.extend(
            items[start : start + MAX_SEQUENCE_ITEMS]
            for start in range(0, len(items), MAX_SEQUENCE_ITEMS)
        )
    return corpus, cut


def train_item2vec(
    sequences: Sequence[list[str]], config: PretrainConfig
) -> tuple[Vectors, dict[str, float | int]]:
    """Train skip-gram item2vec; return item vectors (most frequent first) and training stats."""
    from gensim.models import Word2Vec  # heavy import, only when training

    corpus, cut = _corpus(sequences)
    model = Word2Vec(
        vector_size=config.dim,
        window=config.window,
        min_count=config.min_count,
        sg=1,
        hs=0,
        negative=config.negative,
        workers=config.workers,
        seed=config.seed,
        hashfxn=stable_hash,
    )
    model.build_vocab(corpus)
    if not model.wv.index_to_key:
        raise DataError(
            f"no item occurs at least min_count={config.min_count} times; lower min_count"
        )
    started = time.perf_counter()
    trained_words, _ = model.train(corpus, total_examples=model.corpus_count, epochs=config.epochs)
    seconds = time.perf_counter() - started
    vectors = Vectors(
        np.ascontiguousarray(model.wv.vectors, np.float32), list(model.wv.index_to_key)
    )
    stats = {
        "sequences_cut_at_10000_items": cut,
        "words_trained": int(trained_words),
        "seconds": round(seconds, 3),
        "words_per_second": round(trained_words / max(seconds, 1e-9)),
    }
    return vectors, stats


def user_vectors_of(
    sequences: Sequences, item_vectors: Vectors, config: PretrainConfig
) -> tuple[Vectors, list[str]]:
    """Return each user's vector at the end of the history, and the users that have none."""
    index = item_vectors.index()
    ids, rows, without = [], [], []
    for user, items in zip(sequences.users, sequences.items, strict=True):
        vector, _ = user_vector(
            item_vectors, items, last_n=config.last_n, half_life=config.half_life, index=index
        )
        if vector is None:
            without.append(user)
        else:
            ids.append(user)
            rows.append(vector)
    matrix = np.stack(rows) if rows else np.empty((0, item_vectors.dim), np.float32)
    return Vectors(matrix.astype(np.float32), ids), without


def load_sequences(path: str | Path, min_weight: float | None = None) -> Sequences:
    """Read a sequences file or an interaction log (by suffix) into sequences."""
    if is_interactions_table(path):
        return sequences_from_log(read_interactions(path), min_weight)
    if min_weight is not None:
        raise DataError("min_weight needs an interaction log with a weight column", path)
    return read_sequences(path)


def pretrain(
    interactions: str | Path | pa.Table, out_dir: str | Path, config: PretrainConfig | None = None
) -> PretrainResult:
    """Train item2vec on a file or a log table, and write vectors and a manifest to `out_dir`."""
    config = config or PretrainConfig()
    if isinstance(interactions, pa.Table):
        # checked like a file's log: canonical columns and types, `rating` read as the weight
        sequences = sequences_from_log(check_interactions(interactions), config.min_weight)
        source = {"kind": "table", "rows": interactions.num_rows}
    else:
        path = Path(interactions)
        sequences = load_sequences(path, config.min_weight)
        source = {
            "kind": "interactions" if is_interactions_table(path) else "sequences",
            "path": str(path.resolve()),
            "sha256": file_sha256(path),
        }
    item_vectors, training = train_item2vec(sequences.items, config)
    user_vectors, users_without = user_vectors_of(sequences, item_vectors, config)

    all_items = np.unique(np.concatenate([np.asarray(s, dtype=object) for s in sequences.items]))
    dropped = np.setdiff1d(all_items, np.asarray(item_vectors.ids, dtype=object))
    lengths = np.array([len(s) for s in sequences.items])
    manifest = {
        "format": FORMAT,
        "input": source,
        "parameters": {**asdict(config), "algorithm": "skip-gram, negative sampling"},
        "vocab_size": len(item_vectors),
        "dim": config.dim,
        "items_seen": len(all_items),
        "items_dropped_min_count": len(dropped),
        "items_dropped_examples": [str(i) for i in dropped[:EXAMPLES]],
        "users": len(sequences.users),
        "events": int(lengths.sum()),
        # a one-item sequence has no context pairs: it trains nothing but keeps a user vector
        "users_single_item": int((lengths == 1).sum()),
        "users_without_vector": len(users_without),
        "users_without_vector_examples": users_without[:EXAMPLES],
        **sequences.counts,
        "training": training,
        "gensim": importlib.metadata.version("gensim"),
        "files": ["item_vectors.txt", "item_vectors.bin", "user_vectors.txt", "user_vectors.bin"],
    }
    with atomic_dir(out_dir) as tmp:
        for suffix in (".txt", ".bin"):
            write_vectors(tmp / f"item_vectors{suffix}", item_vectors)
            write_vectors(tmp / f"user_vectors{suffix}", user_vectors)
        write_json(tmp / "manifest.json", manifest)
    return PretrainResult(item_vectors, user_vectors, manifest)
