"""Exact full-corpus ranking metrics, baselines, pointwise metrics and ANN recall.

Protocol: every user with at least one test item is scored against the whole item
catalogue (every item with a pretrained vector); the user's training items are excluded
from the ranking; test pairs that are also training pairs are dropped (they could never be
retrieved). Scores come from batched matrix products streamed over users, so memory is one
`[batch_users, n_items]` block whatever the number of users — no ANN index is involved.

Per user u with relevant (test) set R_u and ranked list L_u (training items removed):
  Recall@K  = |L_u[:K] ∩ R_u| / |R_u|
  HitRate@K = 1 if L_u[:K] ∩ R_u else 0
  NDCG@K    = Σ_{i<K, L_u[i] ∈ R_u} 1/log2(i+2)  /  Σ_{i<min(|R_u|,K)} 1/log2(i+2)
  MRR       = 1 / (1 + #items scored strictly above u's best-scored relevant item)
each averaged over users. MRR uses the full ranking, not a cut-off.

Models with ID embeddings are scored the same way: each user's query is the folded user
tower over (pretrained user vector, the user's vocabulary row), each catalogue item's
embedding the item tower over (item vector, the item's vocabulary row). Users outside the
user vocabulary cannot be scored by such a model, so they leave the evaluation for every
method alike (counted in the protocol).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from finetower.errors import DataError
from finetower.export import folded_queries, item_embeddings
from finetower.index import ItemIndex
from finetower.metrics import roc_auc
from finetower.model import TwoTowerModel
from finetower.user_vectors import DEFAULT_LAST_N, mean_of_last
from finetower.vectors import Vectors

DEFAULT_KS = (10, 20, 50, 100)
BASELINES = ("popularity", "pretrained")
BLOCK_BYTES = 256 << 20  # one [batch_users, n_items] float32 score block + its masks
EMBED_BATCH_ROWS = 65_536


class Scorer(Protocol):
    """Scores a batch of users against every item: `user_rows [b]` -> `[b, n_items]` float32."""

    n_items: int

    def scores(self, user_rows: torch.Tensor) -> torch.Tensor: ...


class DotScorer:
    """`queries [n_users, d] @ items [n_items, d].T`: the model (folded queries, item tower
    outputs; the output bias shifts every score alike, so ranks ignore it) or pretrained
    vectors alone (user · item)."""

    def __init__(self, queries: np.ndarray, items: np.ndarray) -> None:
        if queries.shape[1] != items.shape[1]:
            raise DataError(f"user side is {queries.shape[1]}-d, item side {items.shape[1]}-d")
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        self.items_t = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)).T
        self.n_items = items.shape[0]

    def scores(self, user_rows: torch.Tensor) -> torch.Tensor:
        return self.queries[user_rows] @ self.items_t


class PopularityScorer:
    """Every user gets the items ranked by their training interaction count."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = torch.as_tensor(np.asarray(counts, dtype=np.float32))
        self.n_items = len(counts)

    def scores(self, user_rows: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(user_rows), -1).clone()


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def _group(keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique sorted pair keys -> (users, CSR offsets per user in `users`, items)."""
    users, items = keys // n_items, keys % n_items
    uniq, starts = np.unique(users, return_index=True)
    return uniq, np.append(starts, len(keys)), items


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
    test_keys = np.unique(_pair_keys(np.asarray(test_users), np.asarray(test_items), n_items))
    train_keys = np.empty(0, np.int64)
    if train_users is not None and len(train_users):
        train_keys = np.unique(_pair_keys(np.asarray(train_users), train_items, n_items))
    in_train = np.isin(test_keys, train_keys, assume_unique=True)
    test_keys = test_keys[~in_train]
    users, test_offsets, test_cols = _group(test_keys, n_items)
    # training items of the evaluated users only, as CSR aligned with `users`
    train_keys = train_keys[np.isin(train_keys // n_items, users)]
    train_rows = np.searchsorted(users, train_keys // n_items)
    train_counts = np.bincount(train_rows, minlength=len(users))
    train_offsets = np.concatenate([[0], np.cumsum(train_counts)])
    train_cols = train_keys % n_items

    discounts = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64))
    ideal = torch.cumsum(discounts, 0)
    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "hit_rate", "ndcg")}
    totals["mrr"] = 0.0
    batch = max(1, block_bytes // (n_items * 5))  # float32 scores + one bool comparison
    for start in range(0, len(users), batch):
        stop = min(start + batch, len(users))
        b = stop - start
        block = scorer.scores(torch.from_numpy(users[start:stop]))
        local = torch.from_numpy(np.repeat(np.arange(b), np.diff(train_offsets[start : stop + 1])))
        cols = torch.from_numpy(train_cols[train_offsets[start] : train_offsets[stop]])
        block[local, cols] = -torch.inf
        # relevant items as (local row, column) keys: no [b, n_items] mask needed
        test_local = np.repeat(np.arange(b), np.diff(test_offsets[start : stop + 1]))
        test_slice = test_cols[test_offsets[start] : test_offsets[stop]]
        test_keys_b = torch.from_numpy(test_local * n_items + test_slice)
        n_relevant = torch.from_numpy(np.diff(test_offsets[start : stop + 1]))

        top = torch.topk(block, k_max, dim=1, sorted=True).indices
        top_keys = top + torch.arange(b)[:, None] * n_items
        # membership by binary search: the batch's test keys are sorted
        where = torch.searchsorted(test_keys_b, top_keys).clamp_(max=len(test_keys_b) - 1)
        hits = (test_keys_b[where] == top_keys).double()  # [b, k_max]
        for k in ks:
            kk = min(k, k_max)
            found = hits[:, :kk].sum(1)
            totals[f"recall@{k}"] += float((found / n_relevant).sum())
            totals[f"hit_rate@{k}"] += float((found > 0).sum())
            dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
            idcg = ideal[torch.clamp(n_relevant, max=kk) - 1]
            totals[f"ndcg@{k}"] += float((dcg / idcg).sum())
        # MRR: a hit in the top k_max gives the rank directly; the rest need a full count
        first = torch.where(hits.any(1), hits.argmax(1) + 1, 0)
        missed = torch.nonzero(first == 0).squeeze(1)
        if len(missed):
            relevant_scores = block[torch.from_numpy(test_local), torch.from_numpy(test_slice)]
            best = torch.full((b,), -torch.inf).scatter_reduce(
                0, torch.from_numpy(test_local), relevant_scores, "amax"
            )
            # numpy counts a comparison ~6x faster than torch's bool reduction here
            above = (block.numpy() > best.numpy()[:, None]).sum(1)
            first[missed] = torch.from_numpy(above)[missed] + 1
        totals["mrr"] += float((1.0 / first.double()).sum())

    n_users = len(users)
    metrics = {name: value / n_users if n_users else float("nan") for name, value in totals.items()}
    metrics.update(
        users=n_users,
        test_pairs=len(test_keys),
        test_pairs_in_train=int(in_train.sum()),
        items=n_items,
    )
    return metrics


def history_user_vectors(
    item_vectors: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None = None,
    n_users: int | None = None,
    last_n: int | None = DEFAULT_LAST_N,
) -> tuple[np.ndarray, np.ndarray]:
    """Pretrained user vectors `[n_users, dim]` from interaction rows, and which users have one.

    The mean of the vectors of each user's last `last_n` items by timestamp (input order
    breaks ties) — what `user_vectors.user_vector` gives for one history, for all users at
    once. `items` are rows into `item_vectors` (-1: no vector, skipped like unknown ids).
    """
    known = items >= 0
    users, items = users[known], items[known]
    n_users = int(users.max()) + 1 if n_users is None and len(users) else (n_users or 0)
    order_keys = [np.arange(len(users))]
    if timestamps is not None:
        order_keys.append(np.asarray(timestamps)[known])
    order = np.lexsort([*order_keys, users])  # by user, then time, then input order
    users, items = users[order], items[order]
    groups = np.arange(n_users)
    starts = np.searchsorted(users, groups, side="left")
    ends = np.searchsorted(users, groups, side="right")
    vectors = mean_of_last(item_vectors, items, starts, ends, last_n=last_n)
    has_vector = ends > starts
    return vectors, has_vector


@dataclass
class Interactions:
    """An interaction table: `users`, `items` (ids as strings), optional `timestamps`."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


def read_interactions(path: str | Path) -> Interactions:
    """Read a parquet or CSV table with columns `user`, `item` and optionally `timestamp`."""
    import pyarrow.csv
    import pyarrow.parquet

    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    table = (
        pyarrow.parquet.read_table(path)
        if path.suffix in (".parquet", ".pq")
        else pyarrow.csv.read_csv(path)
    )
    missing = {"user", "item"} - set(table.column_names)
    if missing:
        raise DataError(f"missing column(s) {sorted(missing)}; found {table.column_names}", path)

    def as_str(name: str) -> np.ndarray:
        return np.asarray(table.column(name).cast("string").to_numpy(zero_copy_only=False))

    timestamps = None
    if "timestamp" in table.column_names:
        timestamps = table.column("timestamp").cast("int64").to_numpy(zero_copy_only=False)
    return Interactions(as_str("user"), as_str("item"), timestamps)


def _rows(ids: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """id strings -> rows (-1 where absent), one dictionary lookup per distinct id."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    return np.array([index.get(str(i), -1) for i in uniq], dtype=np.int64)[inverse]


def model_embeddings(
    model: TwoTowerModel,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    user_id_rows: np.ndarray | None = None,
    item_id_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Folded queries `[n_users, dim]` and item embeddings `[n_items, dim]` of a model.

    `query_i · item_j + model.output_bias` is the model's logit for the pair. A model with
    ID embeddings needs `user_id_rows [n_users]` / `item_id_rows [n_items]`: each row's
    index into the model's user / item vocabulary.
    """
    if not model.config.has_ids:
        return folded_queries(model, user_vectors), item_embeddings(model, item_vectors)
    for side, vectors, rows, n_ids in (
        ("user", user_vectors, user_id_rows, model.config.user_ids),
        ("item", item_vectors, item_id_rows, model.config.item_ids),
    ):
        expected = getattr(model.config, f"{side}_dim")
        if model.config.use_vectors and vectors.shape[1] != expected:
            raise DataError(
                f"{side} vectors have size {vectors.shape[1]}, the model takes {expected}"
            )
        if n_ids and rows is None:
            raise DataError(f"this model has {side} ID embeddings: pass each {side}'s id row")
        if n_ids and len(rows) != len(vectors):
            raise DataError(f"{len(rows)} {side} id rows for {len(vectors)} {side} vectors")
        if n_ids and len(rows) and not 0 <= rows.min() <= rows.max() < n_ids:
            raise DataError(f"{side} id rows must be in [0, {n_ids})")
    model.eval()
    return (
        _id_tower_outputs(model.query_embedding, user_vectors, user_id_rows, model),
        _id_tower_outputs(model.encode_items, item_vectors, item_id_rows, model),
    )


def _id_tower_outputs(
    function, vectors: np.ndarray, id_rows: np.ndarray | None, model: TwoTowerModel
) -> np.ndarray:
    """`function(vectors, ids)` over `[n, d]` in bounded batches -> float32 `[n, dim]`.

    `id_rows` None: that side has no ID embedding, the tower takes the vectors alone.
    """
    device = next(model.parameters()).device
    output = np.empty((len(vectors), model.config.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(vectors), EMBED_BATCH_ROWS):
            stop = start + EMBED_BATCH_ROWS
            # copies: the inputs may be read-only memory maps, which torch will not wrap
            batch = torch.from_numpy(np.array(vectors[start:stop], np.float32)).to(device)
            ids = None
            if id_rows is not None:
                ids = torch.from_numpy(np.array(id_rows[start:stop], np.int64)).to(device)
            output[start : start + len(batch)] = function(batch, ids).float().cpu().numpy()
    return output


def _vocabulary_rows(ids: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Row of each id in `vocabulary` (-1 where absent)."""
    return _rows(np.asarray(ids, dtype=str), {str(key): row for row, key in enumerate(vocabulary)})


def evaluate_models(
    item_vectors: Vectors,
    train: Interactions,
    test: Interactions,
    *,
    model: TwoTowerModel | None = None,
    models: Mapping[str, TwoTowerModel] | None = None,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    user_vectors: Vectors | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    last_n: int | None = DEFAULT_LAST_N,
    baselines: Sequence[str] = BASELINES,
) -> dict[str, Any]:
    """Full-corpus metrics of each model and the baselines under one protocol.

    The catalogue is every item in `item_vectors`. A user's pretrained vector comes from
    `user_vectors` when given, else from their training history (mean of the last `last_n`).
    `models` maps names to models (`model` alone is named "model"); the report has one entry
    per name and baseline, and "protocol". Models with ID embeddings need `vocabularies`
    (`{"user": ids, "item": ids}`, what their `user_id` / `item_id` rows stand for, as the
    training data set's `user_vocab.txt` / `item_vocab.txt`); every catalogue item must be
    in the item vocabulary.
    """
    named = dict(models or {})
    if model is not None:
        if "model" in named:
            raise ValueError("pass the model as `model` or as models['model'], not both")
        named = {"model": model, **named}
    unknown = set(baselines) - set(BASELINES)
    clash = set(named) & {*BASELINES, "protocol"}
    if unknown or clash:
        raise ValueError(
            f"unknown baseline(s) {sorted(unknown)}" if unknown else f"reserved names {clash}"
        )
    id_models = {name: m for name, m in named.items() if m.config.has_ids}
    item_rows = item_vectors.index()
    n_items = len(item_vectors)
    train_item_rows, test_item_rows = _rows(train.items, item_rows), _rows(test.items, item_rows)
    if user_vectors is not None:
        user_names = np.asarray(list(user_vectors.index()), dtype=str)
        pretrained_users = user_vectors.vectors
        has_vector = np.ones(len(pretrained_users), bool)
    else:
        user_names = np.unique(np.concatenate([train.users, test.users]).astype(str))
    user_index = {u: row for row, u in enumerate(user_names.tolist())}
    train_user_rows = _rows(train.users, user_index)
    test_user_rows = _rows(test.users, user_index)
    if user_vectors is None:
        pretrained_users, has_vector = history_user_vectors(
            item_vectors.vectors,
            train_user_rows,
            train_item_rows,
            train.timestamps,
            n_users=len(user_names),
            last_n=last_n,
        )
    usable = (test_user_rows >= 0) & (test_item_rows >= 0)
    usable &= has_vector[np.maximum(test_user_rows, 0)]
    id_rows = {}
    not_in_vocabulary = 0
    if id_models:
        id_rows = _id_rows(id_models, vocabularies, user_names, item_vectors)
    if any(m.config.user_ids for m in id_models.values()):
        in_vocabulary = id_rows["user"][np.maximum(test_user_rows, 0)] >= 0
        not_in_vocabulary = int((usable & ~in_vocabulary).sum())
        usable &= in_vocabulary
    known_train = (train_user_rows >= 0) & (train_item_rows >= 0)
    args = (
        test_user_rows[usable],
        test_item_rows[usable],
        train_user_rows[known_train],
        train_item_rows[known_train],
        ks,
    )
    report: dict[str, Any] = {
        "protocol": {
            "catalogue": n_items,
            "test_pairs": len(test),
            "test_pairs_unusable": int((~usable).sum()),
            "test_pairs_user_not_in_vocabulary": not_in_vocabulary,
            "user_vectors": "file" if user_vectors is not None else f"history, last {last_n}",
            "excluded": "each user's training items",
        }
    }
    for name, scored in named.items():
        # users outside the vocabulary are not evaluated: any row stands in for theirs
        user_ids = np.maximum(id_rows["user"], 0) if scored.config.user_ids else None
        item_ids = id_rows["item"] if scored.config.item_ids else None
        queries, items = model_embeddings(
            scored, pretrained_users, item_vectors.vectors, user_ids, item_ids
        )
        report[name] = ranking_metrics(DotScorer(queries, items), *args)
    if "pretrained" in baselines:
        report["pretrained"] = ranking_metrics(
            DotScorer(pretrained_users, item_vectors.vectors), *args
        )
    if "popularity" in baselines:
        counts = np.bincount(train_item_rows[train_item_rows >= 0], minlength=n_items)
        report["popularity"] = ranking_metrics(PopularityScorer(counts), *args)
    return report


def _id_rows(
    id_models: Mapping[str, TwoTowerModel],
    vocabularies: Mapping[str, Sequence[str]] | None,
    user_names: np.ndarray,
    item_vectors: Vectors,
) -> dict[str, np.ndarray]:
    """Each evaluated user's and catalogue item's vocabulary row; refuses a mismatch."""
    if vocabularies is None or not {"user", "item"} <= set(vocabularies):
        raise DataError(
            f"{sorted(id_models)} have ID embeddings: pass vocabularies={{'user': ids, "
            "'item': ids}} (the training data set's user_vocab.txt / item_vocab.txt)"
        )
    for name, id_model in id_models.items():
        for side in ("user", "item"):
            rows = getattr(id_model.config, f"{side}_ids")
            if rows and rows != len(vocabularies[side]):
                raise DataError(
                    f"model {name!r} has {rows} {side} id rows, the {side} vocabulary "
                    f"{len(vocabularies[side])} ids: it was trained on other data"
                )
    item_ids = list(item_vectors.index())
    item_id_rows = _vocabulary_rows(item_ids, vocabularies["item"])
    missing = np.flatnonzero(item_id_rows < 0)
    if len(missing) and any(m.config.item_ids for m in id_models.values()):
        raise DataError(
            f"{len(missing)} catalogue items are not in the item vocabulary, e.g. "
            f"{item_ids[missing[0]]!r}: the ID models cannot score them"
        )
    return {"user": _vocabulary_rows(user_names, vocabularies["user"]), "item": item_id_rows}


def exact_top_k(
    queries: np.ndarray, items: np.ndarray, k: int, *, block_bytes: int = BLOCK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k rows `[n, k]` and inner products by brute force, streamed over queries."""
    items_t = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)).T
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    k = min(k, items.shape[0])
    batch = max(1, block_bytes // (4 * items.shape[0]))
    rows, scores = [], []
    for start in range(0, len(q), batch):
        top = torch.topk(q[start : start + batch] @ items_t, k, dim=1)
        rows.append(top.indices.numpy())
        scores.append(top.values.numpy())
    return np.concatenate(rows), np.concatenate(scores)


def index_recall(index: ItemIndex, queries: np.ndarray, items: np.ndarray, k: int) -> float:
    """Mean |index top k ∩ exact top k| / k: the ANN's recall against exact search.

    `items [n, d]` are the embeddings the index holds, in its row order.
    """
    exact, _ = exact_top_k(queries, items, k)
    found, _ = index.search_rows(queries, k)
    # membership test for all rows at once: offset each row's ids into its own range
    offset = np.arange(len(exact), dtype=np.int64)[:, None] * (items.shape[0] + 1)
    found_keys = np.where(found >= 0, found + offset, -1)
    return float(np.isin(found_keys, exact + offset).sum()) / exact.size


def pointwise_metrics(
    model: TwoTowerModel, users: np.ndarray, items: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """AUC and log-loss of the model's probabilities on labelled (user, item) pairs."""
    with torch.inference_mode():
        logits = torch.cat(
            [
                model(
                    torch.from_numpy(users[s : s + 65536]), torch.from_numpy(items[s : s + 65536])
                )
                for s in range(0, len(labels), 65536)
            ]
        ).double()
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    # log-loss from logits: softplus(z) - y z, stable for any z
    log_loss = float((torch.nn.functional.softplus(logits) - y * logits).mean())
    return {"auc": roc_auc(labels, logits.numpy()), "log_loss": log_loss, "samples": len(labels)}
