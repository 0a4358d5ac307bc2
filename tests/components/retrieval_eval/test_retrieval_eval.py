"""Retrieval evaluation: a hand-computed case (towers, popularity, pretrained), the query's
history cut at its time, the folded scorer's bias, the executor's artifact and report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.common.vectors import Vectors, write_vectors
from components.pusher.pushed import record_towers
from components.retrieval_eval.component import Executor, RetrievalMetrics
from components.retrieval_eval.evaluation import Catalogue, build_queries, evaluate
from components.retrieval_eval.metrics import FoldedScorer
from components.sample_gen.component import HeldOutInteractions, ItemCatalogue

# a=(1,0)  b=(0,1)  c=(0.9,0.1)  d=(-1,0)
ITEMS = Vectors(np.array([[1, 0], [0, 1], [0.9, 0.1], [-1, 0]], np.float32), ["a", "b", "c", "d"])
COUNTS = np.array([5, 3, 0, 1], np.float32)  # popularity: a, b, d, c


def _table(rows: list[tuple[str, str, int]]) -> pa.Table:
    users, items, times = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {
            "user": pa.array(users, pa.string()),
            "item": pa.array(items, pa.string()),
            "timestamp": pa.array(times, pa.int64()),
        }
    )


@pytest.fixture
def held_out(tmp_path):
    """u1: history a, test c. u2: history b, test d. u3: test only, no history.
    u1 also has d at its test time: the query must not see it."""
    folder = tmp_path / "held_out"
    folder.mkdir()
    pq.write_table(_table([("u1", "a", 1), ("u2", "b", 2)]), folder / "train_interactions.parquet")
    pq.write_table(_table([]), folder / "val_interactions.parquet")
    pq.write_table(
        _table([("u1", "c", 5), ("u2", "d", 6), ("u3", "a", 7)]),
        folder / "test_interactions.parquet",
    )
    pq.write_table(
        _table([("u1", "a", 1), ("u2", "b", 2), ("u1", "d", 5)]), folder / "histories.parquet"
    )
    (folder / "manifest.json").write_text("{}")
    return folder


def identity_tower(user_vectors):
    return user_vectors, np.zeros(len(user_vectors), np.float32)


def test_hand_computed_metrics_of_every_method(held_out):
    catalogue = Catalogue(ITEMS, COUNTS)
    queries = build_queries(held_out, catalogue, last_n=5)
    assert queries.users == ["u1", "u2"]
    assert queries.protocol["test_users_without_history"] == 1
    np.testing.assert_array_equal(queries.user_vectors, [[1, 0], [0, 1]])  # d at t=5 unseen
    result = evaluate(
        catalogue,
        queries,
        user_tower=identity_tower,
        item_embeddings=ITEMS.vectors,
        ks=(1, 2, 3),
        ann_backend="flat",
    )
    towers, popularity, pretrained = (
        result["methods"][m] for m in ("towers", "popularity", "pretrained")
    )
    # u1 (seen a): c 0.9, b 0, d -1 -> c first. u2 (seen b): c 0.1, a 0, d 0 -> d third
    assert towers["hit_rate@1"] == towers["recall@1"] == 0.5
    assert towers["hit_rate@2"] == 0.5 and towers["hit_rate@3"] == 1.0
    assert towers["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    assert towers["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert pretrained == towers  # the identity tower ranks as the pretrained vectors do
    # popularity: u1 gets b, d, c (c third); u2 gets a, d, c (d second)
    assert popularity["hit_rate@1"] == 0.0
    assert popularity["hit_rate@2"] == 0.5 and popularity["hit_rate@3"] == 1.0
    assert popularity["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert towers["users"] == 2 and towers["items"] == 4
    assert result["ann"]["recall@3"] == 1.0 and result["ann"]["exact"] is True


def test_folded_scorer_adds_each_users_bias():
    queries = np.array([[1, 0], [0, 2]], np.float32)
    scorer = FoldedScorer(queries, np.array([0.5, -1.0]), ITEMS.vectors)
    np.testing.assert_allclose(
        scorer.scores(np.array([0, 1])), queries @ ITEMS.vectors.T + [[0.5], [-1.0]]
    )


def test_without_a_push_the_baselines_are_reported(held_out, tmp_path):
    catalogue = ItemCatalogue()
    catalogue.uri = str(tmp_path / "catalogue")
    (tmp_path / "catalogue").mkdir()
    write_vectors(tmp_path / "catalogue" / "catalogue.txt", ITEMS)
    pq.write_table(
        pa.table(
            {
                "item": ITEMS.ids,
                "train_count": pa.array(COUNTS.astype(np.int64)),
                "val_count": pa.array([0, 0, 0, 0], pa.int64()),
            }
        ),
        tmp_path / "catalogue" / "catalogue.parquet",
    )
    held = HeldOutInteractions()
    held.uri = str(held_out)
    held.set_int_custom_property("last_n", 5)
    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property("pushed", 0)
    out = RetrievalMetrics()
    out.uri = str(tmp_path / "metrics")
    Executor().Do(
        {"pushed_model": [pushed], "catalogue": [catalogue], "held_out": [held]},
        {"metrics": [out]},
        {"ks": "1,2,3", "ann_backend": "ivf"},
    )
    metrics = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"popularity", "pretrained"}
    assert metrics["methods"]["popularity"]["hit_rate@2"] == 0.5
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "Nothing was pushed" in report and "| popularity | 0.0000 | 0.5000 | 1.0000 |" in report
    png = (tmp_path / "metrics" / "recall.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert out.get_float_custom_property("popularity_hit_rate@50") == 0.0  # K 50 not asked


def test_the_evaluation_reads_and_writes_uris(held_out, tmp_path):
    """The same evaluation with its artifacts on TensorFlow's ram:// (gs:// stands in)."""
    test_without_a_push_the_baselines_are_reported(held_out, tmp_path)
    bucket = f"ram://retrieval-{tmp_path.name}"
    for name, local in (("catalogue", tmp_path / "catalogue"), ("held_out", held_out)):
        for path in local.iterdir():
            tf.io.gfile.makedirs(f"{bucket}/{name}")
            tf.io.gfile.copy(str(path), f"{bucket}/{name}/{path.name}")
    catalogue, held, out = ItemCatalogue(), HeldOutInteractions(), RetrievalMetrics()
    catalogue.uri, held.uri, out.uri = f"{bucket}/catalogue", f"{bucket}/held_out", f"{bucket}/m"
    held.set_int_custom_property("last_n", 5)
    pushed = standard_artifacts.PushedModel()
    record_towers(pushed, None)
    Executor().Do(
        {"pushed_model": [pushed], "catalogue": [catalogue], "held_out": [held]},
        {"metrics": [out]},
        {"ks": "1,2,3", "ann_backend": "ivf"},
    )
    with tf.io.gfile.GFile(f"{bucket}/m/metrics.json") as f:
        remote = json.load(f)
    local = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert remote["methods"] == local["methods"]
    assert tf.io.gfile.exists(f"{bucket}/m/recall.png")


def test_history_before_the_query_is_excluded_for_every_method(tmp_path):
    """u1 saw `a` in the data-rich domain before its query (t=1 < 5): `a` is first for the
    towers, the pretrained vectors and popularity alike, and must leave every ranking, so
    the test item `c` comes first. `c` seen again at t=9, after the query, stays: its test
    pair is neither dropped nor excluded."""
    folder = tmp_path / "held_out"
    folder.mkdir()
    pq.write_table(_table([]), folder / "train_interactions.parquet")
    pq.write_table(_table([]), folder / "val_interactions.parquet")
    pq.write_table(_table([("u1", "c", 5)]), folder / "test_interactions.parquet")
    pq.write_table(_table([("u1", "a", 1), ("u1", "c", 9)]), folder / "histories.parquet")
    # popularity a, c, b, d; the user vector is a's: a (1.0) then c (0.9) by dot product
    catalogue = Catalogue(ITEMS, np.array([5, 1, 3, 0], np.float32))
    queries = build_queries(folder, catalogue, last_n=5)
    assert queries.protocol["history_events_before_query_excluded"] == 1
    assert "every domain" in queries.protocol["seen_items_excluded"]

    def hit_at_1(q) -> dict[str, float]:
        result = evaluate(
            catalogue, q, user_tower=identity_tower, item_embeddings=ITEMS.vectors, ks=(1,)
        )
        assert all(
            m["users"] == 1 and m["test_pairs_in_train"] == 0 for m in result["methods"].values()
        )
        return {name: m["hit_rate@1"] for name, m in result["methods"].items()}

    assert hit_at_1(queries) == {"towers": 1.0, "popularity": 1.0, "pretrained": 1.0}
    # without the exclusion `a` takes the top slot of every method
    unexcluded = dataclasses.replace(
        queries, seen_users=np.empty(0, np.int64), seen_items=np.empty(0, np.int64)
    )
    assert hit_at_1(unexcluded) == {"towers": 0.0, "popularity": 0.0, "pretrained": 0.0}
