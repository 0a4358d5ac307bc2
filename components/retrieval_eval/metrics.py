"""Exact full-corpus ranking metrics, baselines, ROC AUC and ANN recall, in numpy.

Protocol: every user with at least one test item is scored against the whole item
catalogue; the user's training items are excluded from the ranking; test pairs that are
also training pairs are dropped (they could never be retrieved). Scores come from batched
matrix products streamed over users, so memory is one `[batch_users, n_items]` block
whatever the number of users — no ANN index is involved.

Per user u with relevant (test) set R_u and ranked list L_u (training items removed):
  Recall@K  = |L_u[:K] ∩ R_u| / |R_u|
  HitRate@K = 1 if L_u[:K] ∩ R_u else 0
  NDCG@K    = Σ_{i<K, L_u[i] ∈ R_u} 1/log2(i+2)  /  Σ_{i<min(|R_u|,K)} 1/log2(i+2)
  MRR       = 1 / (1 + #items scored strictly above u's best-scored relevant item)
each averaged over users. MRR uses the full ranking, not a cut-off.

Scorers: `DotScorer(queries, items)` ranks by `query · item` (a two-tower model's user and
item tower outputs; the output bias shifts every score alike, so ranks ignore it; or the
pretrained vectors alone), `PopularityScorer(train_counts)` gives every user the items by
their training interaction count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from components.common.errors import DataError

DEFAULT_KS = (10, 20, 50, 100)
BLOCK_BYTES = 256 << 20  # a [batch_users, n_items] block: scores, top-k partition, masks
BYTES_PER_SCORE = 40  # float32 score, int64 partition index, masks; int64 keys on ties


class Scorer(Protocol):
    """Scores a batch of users against every item: `user_rows [b]` -> `[b, n_items]` float32."""

    n_items: int

    def scores(self, user_rows: np.ndarray) -> np.ndarray: ...


class RowSearcher(Protocol):
    """What `index_recall` needs of an item index (`serving.index.ItemIndex` has it)."""

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class DotScorer:
    """`queries [n_users, d] @ items [n_items, d].T`."""

    def __init__(self, queries: np.ndarray, items: np.ndarray) -> None:
        if queries.shape[1] != items.shape[1]:
            raise DataError(f"user side is {queries.shape[1]}-d, item side {items.shape[1]}-d")
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.items_t = np.ascontiguousarray(items, dtype=np.float32).T
        self.n_items = items.shape[0]

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return self.queries[user_rows] @ self.items_t


class FoldedScorer(DotScorer):
    """`queries [n_users, d] @ items [n_items, d].T + bias [n_users]`: the towers' logit
    (sigmoid of it is the model's probability); the bias shifts a user's scores alike."""

    def __init__(self, queries: np.ndarray, bias: np.ndarray, items: np.ndarray) -> None:
        super().__init__(queries, items)
        self.bias = np.asarray(bias, dtype=np.float32).reshape(-1, 1)
        if len(self.bias) != len(self.queries):
            raise DataError(f"{len(self.bias)} biases for {len(self.queries)} queries")

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return super().scores(user_rows) + self.bias[user_rows]


class PopularityScorer:
    """Every user gets the items ranked by their training interaction count."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.float32)
        self.n_items = len(self.counts)

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(user_rows), self.n_items)).copy()


def top_k(block: np.ndarray, k: int) -> np.ndarray:
    """Column indices `[b, k]` of each row's k largest values, best first; ties go to the
    lower column, at the cut-off too (so a tied ranking, e.g. by popularity, is stable)."""
    b, n = block.shape
    k = min(k, n)
    if k < n:
        part = np.argpartition(block, n - k, axis=1)[:, n - k :]
        kth = np.take_along_axis(block, part, 1).min(1, keepdims=True)  # the k-th largest
        # rows where the k-th value ties with columns left out: the lowest columns win
        tied = np.flatnonzero((block >= kth).sum(1) > k)
        if len(tied):
            sub, cut = block[tied], kth[tied]
            rank = np.where(sub > cut, 0, np.where(sub == cut, 1, 2)).astype(np.int64)
            part[tied] = np.argpartition(rank * n + np.arange(n), k - 1, axis=1)[:, :k]
        part.sort(axis=1)
    else:
        part = np.broadcast_to(np.arange(n), (b, n))
    order = np.argsort(-np.take_along_axis(block, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)


def _group(keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique sorted pair keys -> (users, CSR offsets per user in `users`, items)."""
    users, items = keys // n_items, keys % n_items
    uniq, starts = np.unique(users, return_index=True)
    return uniq, np.append(starts, len(keys)), items


@dataclass
class _Relevance:
    """Evaluated users (sorted), their test items and their training items as CSR rows."""

    users: np.ndarray
    test_offsets: np.ndarray
    test_cols: np.ndarray
    train_offsets: np.ndarray
    train_cols: np.ndarray
    test_pairs: int
    test_pairs_in_train: int


def _relevance(
    test_users: np.ndarray,
    test_items: np.ndarray,
    train_users: np.ndarray | None,
    train_items: np.ndarray | None,
    n_items: int,
) -> _Relevance:
    """Test pairs less training pairs, grouped by user; training items of those users only."""
    test_keys = np.unique(_pair_keys(test_users, test_items, n_items))
    train_keys = np.empty(0, np.int64)
    if train_users is not None and len(train_users):
        train_keys = np.unique(_pair_keys(train_users, train_items, n_items))
    in_train = np.isin(test_keys, train_keys, assume_unique=True)
    test_keys = test_keys[~in_train]
    users, test_offsets, test_cols = _group(test_keys, n_items)
    train_keys = train_keys[np.isin(train_keys // n_items, users)]
    train_rows = np.searchsorted(users, train_keys // n_items)
    train_counts = np.bincount(train_rows, minlength=len(users))
    train_offsets = np.concatenate([[0], np.cumsum(train_counts)])
    return _Relevance(
        users,
        test_offsets,
        test_cols,
        train_offsets,
        train_keys % n_items,
        len(test_keys),
        int(in_train.sum()),
    )


def _add_cutoffs(
    totals: dict[str, float], hits: np.ndarray, n_relevant: np.ndarray, ks: list[int]
) -> None:
    """Add a block's Recall, HitRate and NDCG at each K (`hits [b, k_max]` in rank order)."""
    k_max = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))
    ideal = np.cumsum(discounts)
    for k in ks:
        kk = min(k, k_max)
        found = hits[:, :kk].sum(1)
        totals[f"recall@{k}"] += float((found / n_relevant).sum())
        totals[f"hit_rate@{k}"] += float((found > 0).sum())
        dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
        idcg = ideal[np.minimum(n_relevant, kk) - 1]
        totals[f"ndcg@{k}"] += float((dcg / idcg).sum())


def ranking_metrics(
    scorer: Scorer,
    test_users: np.ndarray,
    test_items: np.ndarray,
    train_users: np.ndarray | None = None,
    train_items: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> dict[str, Any]:
    """Recall@K, HitRate@K, NDCG@K and MRR over the full catalogue (see the module docstring).

    Users and items are rows (int arrays): `test_users[j]` interacted with `test_items[j]`
    in the test period; training pairs are excluded from each user's ranking.
    """
    n_items = scorer.n_items
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise DataError(f"cut-offs must be positive integers, got {ks}")
    k_max = min(ks[-1], n_items)
    rel = _relevance(test_users, test_items, train_users, train_items, n_items)
    users = rel.users
    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "hit_rate", "ndcg")}
    totals["mrr"] = 0.0
    batch = max(1, block_bytes // (n_items * BYTES_PER_SCORE))
    for start in range(0, len(users), batch):
        stop = min(start + batch, len(users))
        b = stop - start
        block = np.array(scorer.scores(users[start:stop]), dtype=np.float32)
        local = np.repeat(np.arange(b), np.diff(rel.train_offsets[start : stop + 1]))
        block[local, rel.train_cols[rel.train_offsets[start] : rel.train_offsets[stop]]] = -np.inf
        # relevant items as (local row, column) keys: no [b, n_items] mask needed
        n_relevant = np.diff(rel.test_offsets[start : stop + 1])
        test_local = np.repeat(np.arange(b), n_relevant)
        test_slice = rel.test_cols[rel.test_offsets[start] : rel.test_offsets[stop]]
        test_keys_b = test_local * n_items + test_slice  # sorted: rows, then columns

        top_keys = top_k(block, k_max) + np.arange(b)[:, None] * n_items
        # membership by binary search in the batch's sorted test keys
        where = np.minimum(np.searchsorted(test_keys_b, top_keys), len(test_keys_b) - 1)
        hits = (test_keys_b[where] == top_keys).astype(np.float64)  # [b, k_max]
        _add_cutoffs(totals, hits, n_relevant, ks)
        # MRR: a hit in the top k_max gives the rank directly; the rest need a full count
        first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
        missed = np.flatnonzero(first == 0)
        if len(missed):
            best = np.full(b, -np.inf, np.float32)
            np.maximum.at(best, test_local, block[test_local, test_slice])
            first[missed] = (block[missed] > best[missed, None]).sum(1) + 1
        totals["mrr"] += float((1.0 / first).sum())

    n_users = len(users)
    metrics = {name: value / n_users if n_users else float("nan") for name, value in totals.items()}
    metrics.update(
        users=n_users,
        test_pairs=rel.test_pairs,
        test_pairs_in_train=rel.test_pairs_in_train,
        items=n_items,
    )
    return metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties count one half); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank over runs of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def exact_top_k(
    queries: np.ndarray, items: np.ndarray, k: int, *, block_bytes: int = BLOCK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k rows `[n, k]` and inner products by brute force, streamed over queries."""
    items_t = np.ascontiguousarray(items, dtype=np.float32).T
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, items.shape[0])
    batch = max(1, block_bytes // (BYTES_PER_SCORE * items.shape[0]))
    rows, scores = [], []
    for start in range(0, len(queries), batch):
        block = queries[start : start + batch] @ items_t
        top = top_k(block, k)
        rows.append(top)
        scores.append(np.take_along_axis(block, top, 1))
    if not rows:
        return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
    return np.concatenate(rows).astype(np.int64), np.concatenate(scores)


def index_recall(index: RowSearcher, queries: np.ndarray, items: np.ndarray, k: int) -> float:
    """Mean |index top k ∩ exact top k| / k: the ANN's recall against exact search.

    `items [n, d]` are the embeddings the index holds, in its row order.
    """
    exact, _ = exact_top_k(queries, items, k)
    found, _ = index.search_rows(queries, k)
    # membership test for all rows at once: offset each row's ids into its own range
    offset = np.arange(len(exact), dtype=np.int64)[:, None] * (items.shape[0] + 1)
    found_keys = np.where(found >= 0, found + offset, -1)
    return float(np.isin(found_keys, exact + offset).sum()) / exact.size
