"""Exact retrieval evaluation of the pushed towers against two baselines, from artifacts.

Protocol (the numbers are in `metrics.ranking_metrics`):
- catalogue: every item with a pretrained vector (SampleGen's catalogue), ranked in full;
- queries: each user with a held-out (test) event; the user vector is taken at the user's
  first test time from the history strictly before it (the data-rich domain and the target's
  train events, mean of the last `last_n`), as the samples' user vectors were; users with no
  such history cannot be scored by any method and leave the evaluation (counted);
- seen items excluded, for every method: everything in the user's history before the query
  time, in every domain: the history events (data-rich domain and target train) strictly
  before the user's query time, and the user's target train and eval (validation) items. An
  item the user meets only at or after the query time stays in the ranking. (In MovieLens a
  user rates a movie once, so an item seen before can never be a hit, yet it took top slots.)
- methods, each over the same queries:
    towers      the fine-tuned model's folded ranking, query · item_embedding + bias
                (user tower `query`/`bias`, item tower `item_embedding`)
    popularity  items by their target train + eval counts
    pretrained  the pretrained vectors alone, user_vector · item_vector
- ANN: the towers' item embeddings in an approximate index (`serving.index`), its top K
  against the exact top K for the same queries, reported apart from model quality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import DataError
from components.common.histories import query_user_vectors
from components.common.names import HISTORIES_TABLE, interactions_table
from components.common.paths import join, read_bytes
from components.common.vectors import Vectors
from components.retrieval_eval.metrics import (
    DEFAULT_KS,
    DotScorer,
    FoldedScorer,
    PopularityScorer,
    index_recall,
    ranking_metrics,
)

# user vectors [n, U] -> (query [n, 64], bias [n])
UserTower = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def read_table(path: str) -> pa.Table:
    """A Parquet table from a local path or a URI."""
    return pq.read_table(pa.BufferReader(read_bytes(path)))


@dataclass
class Catalogue:
    """Items in row order: ids, pretrained vectors `[n, I]`, popularity counts `[n]`."""

    vectors: Vectors
    counts: np.ndarray

    @property
    def ids(self) -> list[str]:
        return self.vectors.ids


@dataclass
class Queries:
    """The evaluated users: pretrained vectors `[n, U]`, test and seen pairs as rows."""

    users: list[str]
    user_vectors: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    seen_users: np.ndarray
    seen_items: np.ndarray
    protocol: dict[str, Any]


def _rows(column: pa.ChunkedArray | pa.Array, ids: list[str]) -> np.ndarray:
    rows = pc.index_in(column, value_set=pa.array(ids, pa.string()))
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def build_queries(held_out_dir: str | Path, catalogue: Catalogue, *, last_n: int | None) -> Queries:
    """Queries from SampleGen's held-out tables (see the module docstring)."""
    folder = str(held_out_dir)
    test = read_table(join(folder, interactions_table("test")))
    seen = pa.concat_tables(
        [read_table(join(folder, interactions_table(s))) for s in ("train", "val")]
    )
    histories = read_table(join(folder, HISTORIES_TABLE))
    if test.num_rows == 0:
        raise DataError("no held-out (test) event to evaluate on", folder)
    test_items = _rows(test["item"], catalogue.ids)
    in_catalogue = test_items >= 0
    test = test.filter(pa.array(in_catalogue))
    test_items = test_items[in_catalogue]
    # each user's first test time: the query is made of what came strictly before it
    firsts = test.group_by("user").aggregate([("timestamp", "min")])
    users = firsts["user"].to_pylist()
    vectors, has_history = query_user_vectors(
        histories,
        catalogue.vectors,
        users,
        firsts["timestamp_min"].to_numpy(),
        last_n=last_n,
    )
    kept = [u for u, h in zip(users, has_history, strict=True) if h]
    test_users = _rows(test["user"], kept)
    scored = test_users >= 0
    seen_users, seen_items = _rows(seen["user"], kept), _rows(seen["item"], catalogue.ids)
    seen_ok = (seen_users >= 0) & (seen_items >= 0)
    query_times = firsts["timestamp_min"].to_numpy()[has_history]
    before_users, before_items = history_before_query(histories, kept, query_times, catalogue)
    return Queries(
        users=kept,
        user_vectors=vectors[has_history],
        test_users=test_users[scored],
        test_items=test_items[scored],
        seen_users=np.concatenate([seen_users[seen_ok], before_users]),
        seen_items=np.concatenate([seen_items[seen_ok], before_items]),
        protocol={
            "catalogue_items": len(catalogue.ids),
            "test_users": len(users),
            "test_users_without_history": int((~has_history).sum()),
            "test_events_item_not_in_catalogue": int((~in_catalogue).sum()),
            "query_time": "each user's first test event; history strictly before it",
            "user_vector": f"mean of the last {last_n} items",
            "seen_items_excluded": (
                "every method: the user's history before the query time in every domain "
                "(history events strictly before it, target train and eval items)"
            ),
            "history_events_before_query_excluded": len(before_users),
        },
    )


def history_before_query(
    histories: pa.Table, users: list[str], query_times: np.ndarray, catalogue: Catalogue
) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, item rows) of the history events strictly before each user's query time
    (`query_times[i]` is `users[i]`'s), items in the catalogue only."""
    user_rows = _rows(histories["user"], users)
    item_rows = _rows(histories["item"], catalogue.ids)
    known = (user_rows >= 0) & (item_rows >= 0)
    times = histories["timestamp"].to_numpy()
    before = known & (times < np.asarray(query_times, np.int64)[np.maximum(user_rows, 0)])
    return user_rows[before], item_rows[before]


def evaluate(
    catalogue: Catalogue,
    queries: Queries,
    *,
    user_tower: UserTower | None = None,
    item_embeddings: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    ann_backend: str | None = "ivf",
) -> dict[str, Any]:
    """Metrics of every method (towers only when given) and the ANN's recall; see the module
    docstring. `item_embeddings [n_items, 64]` are in the catalogue's row order."""
    pairs = (queries.test_users, queries.test_items, queries.seen_users, queries.seen_items)
    methods: dict[str, dict] = {}
    ann: dict[str, Any] = {}
    if user_tower is not None and item_embeddings is not None:
        query, bias = user_tower(queries.user_vectors)
        methods["towers"] = ranking_metrics(
            FoldedScorer(query, bias, item_embeddings), *pairs, ks=ks
        )
        if ann_backend:
            ann = ann_recall(query, item_embeddings, ks, ann_backend)
    methods["popularity"] = ranking_metrics(PopularityScorer(catalogue.counts), *pairs, ks=ks)
    methods["pretrained"] = ranking_metrics(
        DotScorer(queries.user_vectors, catalogue.vectors.vectors), *pairs, ks=ks
    )
    return {"protocol": queries.protocol, "ks": sorted(ks), "methods": methods, "ann": ann}


def ann_recall(
    queries: np.ndarray, items: np.ndarray, ks: Sequence[int], backend: str
) -> dict[str, Any]:
    """Recall@K of an approximate index of `items` against exact search, same queries."""
    from serving.index import make_index

    index = make_index(backend).build(items)
    out: dict[str, Any] = {"backend": backend, "params": index.params, "exact": index.is_exact}
    for k in sorted(ks):
        out[f"recall@{k}"] = index_recall(index, queries, items, min(k, len(items)))
    return out


def ratios(result: dict[str, Any], metric: str = "hit_rate@50") -> dict[str, float]:
    """The towers' `metric` over each baseline's (NaN where a side is missing or zero)."""
    methods = result["methods"]
    if "towers" not in methods:
        return {}
    towers = methods["towers"][metric]
    return {
        f"towers_over_{name}": towers / methods[name][metric] if methods[name][metric] else np.nan
        for name in ("popularity", "pretrained")
    }
