"""Full-catalogue ranking metrics against hand-computed examples; ROC AUC; ANN recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.common.errors import DataError
from components.retrieval_eval.metrics import (
    DotScorer,
    PopularityScorer,
    exact_top_k,
    index_recall,
    ranking_metrics,
    roc_auc,
    top_k,
)
from serving.index import make_index


def test_ranking_metrics_on_a_hand_computed_example():
    # 1 user, 6 items scored 6,5,4,3,2,1 (items 0..5 in that order); item 0 is a training
    # item (excluded), so the ranking is 1,2,3,4,5. Test items: 2 and 5 -> ranks 2 and 5.
    scorer = DotScorer(np.array([[1.0]], np.float32), np.array([[6], [5], [4], [3], [2], [1.0]]))
    m = ranking_metrics(scorer, np.array([0, 0]), np.array([2, 5]), np.array([0]), np.array([0]),
                        ks=[1, 2, 5])  # fmt: skip
    assert m["recall@1"] == 0 and m["hit_rate@1"] == 0 and m["ndcg@1"] == 0
    assert m["recall@2"] == 0.5 and m["hit_rate@2"] == 1
    # NDCG@2 = (1/log2(3)) / (1/log2(2) + 1/log2(3))
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # NDCG@5 = (1/log2(3) + 1/log2(6)) / (1 + 1/log2(3))
    assert m["ndcg@5"] == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    )
    assert m["recall@5"] == 1.0
    assert m["mrr"] == pytest.approx(1 / 2)  # best relevant item ranks 2nd
    assert m["users"] == 1 and m["test_pairs"] == 2


def test_metrics_average_over_users_and_drop_test_pairs_seen_in_training():
    # user 0: ranking 0,1,2 (test {0}) -> hit at 1; user 1: same scores, test {2} -> rank 3.
    # user 1's test pair (1, 0) is also a training pair: dropped, counted.
    scorer = PopularityScorer(np.array([3.0, 2.0, 1.0]))
    test_users, test_items = np.array([0, 1, 1]), np.array([0, 2, 0])
    m = ranking_metrics(scorer, test_users, test_items, np.array([1]), np.array([0]), ks=[1, 3])
    # user 1's ranking without item 0 is 1,2: item 2 at rank 2
    assert m["hit_rate@1"] == 0.5 and m["recall@3"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)  # MRR = mean(1/1, 1/2)
    assert m["test_pairs_in_train"] == 1 and m["users"] == 2


def test_mrr_counts_the_full_ranking_past_the_largest_cut_off():
    # 10 items scored 9..0; the only test item is item 7: 7 items score above it -> rank 8
    scorer = PopularityScorer(np.arange(10, 0, -1, dtype=np.float32))
    m = ranking_metrics(scorer, np.array([0]), np.array([7]), ks=[2])
    assert m["recall@2"] == 0 and m["mrr"] == pytest.approx(1 / 8)


def test_streaming_blocks_give_the_same_metrics_as_one_block():
    rng = np.random.default_rng(0)
    scorer = DotScorer(rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(500, 8)))
    args = (rng.integers(0, 300, 2000), rng.integers(0, 500, 2000),
            rng.integers(0, 300, 5000), rng.integers(0, 500, 5000))  # fmt: skip
    whole = ranking_metrics(scorer, *args, ks=[5, 50])
    tiny = ranking_metrics(scorer, *args, ks=[5, 50], block_bytes=500 * 40 * 7)  # 7 users a block
    assert whole == pytest.approx(tiny)


def test_metrics_equal_a_plain_per_user_computation():
    rng = np.random.default_rng(6)
    queries, items = rng.normal(size=(40, 4)), rng.normal(size=(60, 4))
    test_users, test_items = rng.integers(0, 40, 120), rng.integers(0, 60, 120)
    train_users, train_items = rng.integers(0, 40, 200), rng.integers(0, 60, 200)
    m = ranking_metrics(
        DotScorer(queries, items), test_users, test_items, train_users, train_items, ks=[10]
    )
    scores = (queries.astype(np.float32) @ items.astype(np.float32).T).astype(np.float64)
    recalls, ndcgs, rrs = [], [], []
    for u in np.unique(test_users):
        seen = set(train_items[train_users == u])
        relevant = set(test_items[test_users == u]) - seen
        if not relevant:
            continue
        ranking = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen]
        top = ranking[:10]
        recalls.append(len(relevant & set(top)) / len(relevant))
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in relevant)
        ndcgs.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(len(relevant), 10))))
        rrs.append(1 / (1 + next(r for r, i in enumerate(ranking) if i in relevant)))
    assert m["users"] == len(recalls)
    assert m["recall@10"] == pytest.approx(np.mean(recalls))
    assert m["ndcg@10"] == pytest.approx(np.mean(ndcgs))
    assert m["mrr"] == pytest.approx(np.mean(rrs))


def test_bad_cut_offs_and_mismatched_sides_are_refused():
    scorer = PopularityScorer(np.ones(3))
    with pytest.raises(DataError, match="cut-offs"):
        ranking_metrics(scorer, np.array([0]), np.array([1]), ks=[0, 5])
    with pytest.raises(DataError, match="user side is 2-d, item side 3-d"):
        DotScorer(np.ones((1, 2)), np.ones((4, 3)))


def test_top_k_is_sorted_best_first_with_ties_by_column():
    block = np.array([[1.0, 3.0, 3.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 5.0]], np.float32)
    np.testing.assert_array_equal(top_k(block, 3), [[1, 2, 4], [4, 0, 1]])
    np.testing.assert_array_equal(top_k(block, 9)[0], [1, 2, 4, 0, 3])
    # excluded items (-inf) tie among themselves, and come last
    block[0, [1, 2, 4]] = -np.inf
    np.testing.assert_array_equal(top_k(block, 4)[0], [0, 3, 1, 2])


def test_roc_auc_counts_ties_as_one_half():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_exact_top_k_streams_over_queries():
    rng = np.random.default_rng(7)
    queries, items = rng.normal(size=(30, 5)), rng.normal(size=(80, 5))
    rows, scores = exact_top_k(queries, items, 4, block_bytes=40 * 80 * 7)  # 7 queries a block
    expected = np.argsort(-(queries.astype(np.float32) @ items.astype(np.float32).T), axis=1)
    np.testing.assert_array_equal(rows, expected[:, :4])
    np.testing.assert_allclose(
        scores, np.einsum("nd,nkd->nk", queries, items[rows]), rtol=1e-5, atol=1e-6
    )


def test_index_recall_is_one_for_flat_and_measured_for_annoy():
    rng = np.random.default_rng(3)
    items = np.abs(rng.normal(size=(2000, 16))).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    assert index_recall(make_index("flat").build(items), queries, items, 20) == 1.0
    annoy = make_index("annoy", n_trees=5).build(items)
    exact, _ = exact_top_k(queries, items, 20)
    found, _ = annoy.search_rows(queries, 20)
    # recall@20 = mean over queries of |found ∩ exact| / 20
    expected = np.mean([len(set(f) & set(e)) / 20 for f, e in zip(found, exact, strict=True)])
    assert index_recall(annoy, queries, items, 20) == pytest.approx(expected)
    assert expected < 1.0  # 5 trees miss some: the check is not trivially 1
