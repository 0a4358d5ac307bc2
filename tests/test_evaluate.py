"""Full-corpus metrics against hand-computed examples; baselines; ANN recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finetower.evaluate import (
    DotScorer,
    Interactions,
    PopularityScorer,
    evaluate_models,
    exact_top_k,
    history_user_vectors,
    index_recall,
    pointwise_metrics,
    ranking_metrics,
)
from finetower.index import make_index
from finetower.model import TwoTowerModel
from finetower.user_vectors import user_vector
from finetower.vectors import Vectors


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


def test_streaming_blocks_give_the_same_metrics_as_one_block():
    rng = np.random.default_rng(0)
    scorer = DotScorer(rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(500, 8)))
    args = (rng.integers(0, 300, 2000), rng.integers(0, 500, 2000),
            rng.integers(0, 300, 5000), rng.integers(0, 500, 5000))  # fmt: skip
    whole = ranking_metrics(scorer, *args, ks=[5, 50])
    tiny = ranking_metrics(scorer, *args, ks=[5, 50], block_bytes=500 * 6 * 7)  # 7 users a block
    assert whole == pytest.approx(tiny)


def test_history_user_vectors_match_user_vector_per_user():
    rng = np.random.default_rng(1)
    items = Vectors(rng.normal(size=(40, 6)).astype(np.float32))
    users, rows, times = rng.integers(0, 5, 100), rng.integers(-1, 40, 100), rng.permutation(100)
    vectors, has = history_user_vectors(items.vectors, users, rows, times, n_users=6, last_n=3)
    assert not has[5]
    for u in range(5):
        order = np.argsort(times[users == u], kind="stable")
        history = [str(r) if r >= 0 else "unknown" for r in rows[users == u][order]]
        expected, _ = user_vector(items, history, last_n=3)
        np.testing.assert_allclose(vectors[u], expected, rtol=1e-5, atol=1e-6)


def test_evaluate_models_reports_model_and_baselines_under_one_protocol():
    rng = np.random.default_rng(2)
    items = Vectors(rng.normal(size=(200, 128)).astype(np.float32), [f"i{i}" for i in range(200)])
    train_items = np.array([f"i{i}" for i in rng.integers(0, 200, 400)])
    train = Interactions(np.array([f"u{i % 20}" for i in range(400)]), train_items, np.arange(400))
    test = Interactions(np.array(["u1", "u2", "u3", "ghost"]), np.array(["i5", "i6", "zz", "i7"]))
    report = evaluate_models(items, train, test, model=TwoTowerModel().eval(), ks=[10])
    assert {"model", "pretrained", "popularity", "protocol"} <= set(report)
    assert report["protocol"]["test_pairs_unusable"] == 2  # unknown item 'zz', user without history
    assert all(0 <= report[name]["recall@10"] <= 1 for name in ("model", "popularity"))


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


def test_pointwise_auc_and_log_loss():
    model = TwoTowerModel().eval()
    rng = np.random.default_rng(4)
    users, items = rng.normal(size=(100, 128)), rng.normal(size=(100, 128))
    m = pointwise_metrics(model, users.astype(np.float32), items.astype(np.float32),
                          rng.integers(0, 2, 100))  # fmt: skip
    assert 0 <= m["auc"] <= 1 and m["log_loss"] > 0 and m["samples"] == 100
