"""Full-corpus metrics against hand-computed examples; baselines; ANN recall."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from finetower.cli import app
from finetower.dataset import write_dataset
from finetower.errors import DataError
from finetower.evaluate import (
    DotScorer,
    Interactions,
    PopularityScorer,
    evaluate_models,
    exact_top_k,
    history_user_vectors,
    index_recall,
    model_embeddings,
    pointwise_metrics,
    ranking_metrics,
)
from finetower.index import make_index
from finetower.model import ModelConfig, TwoTowerModel
from finetower.runs import save_run
from finetower.textformat import SampleChunk
from finetower.user_vectors import user_vector
from finetower.vectors import Vectors, write_vectors


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


def _hand_id_model() -> TwoTowerModel:
    """ID embeddings only, identity towers, w = 1, b = 0.5: logit(u, i) = e_u · e_i + 0.5."""
    config = ModelConfig(user_dim=2, item_dim=2, tower=(2,), user_ids=2, item_ids=3, id_dim=2,
                         use_vectors=False)  # fmt: skip
    model = TwoTowerModel(config)
    with torch.no_grad():
        for tower in (model.user_tower, model.item_tower):
            tower[0].weight.copy_(torch.eye(2))
            tower[0].bias.zero_()
        model.output.weight.fill_(1.0)
        model.output.bias.fill_(0.5)
        # rows of HAND_VOCABULARIES: u=(1,0), v=(0,1); c=(0,3), a=(3,0), b=(2,2)
        model.user_id_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.item_id_embedding.weight.copy_(torch.tensor([[0.0, 3.0], [3.0, 0.0], [2.0, 2.0]]))
    return model.eval()


HAND_VOCABULARIES = {"user": ["u", "v"], "item": ["c", "a", "b"]}


def test_id_model_embeddings_give_the_models_logits():
    model = _hand_id_model()
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(2, 2)), rng.normal(size=(3, 2))
    user_ids, item_ids = np.array([1, 0]), np.array([2, 0, 1])
    queries, embedded = model_embeddings(model, users, items, user_ids, item_ids)
    with torch.no_grad():
        logits = model(
            torch.tensor(users, dtype=torch.float32).repeat_interleave(3, 0),
            torch.tensor(items, dtype=torch.float32).repeat(2, 1),
            torch.from_numpy(user_ids).repeat_interleave(3),
            torch.from_numpy(item_ids).repeat(2),
        )
    np.testing.assert_allclose((queries @ embedded.T + 0.5).ravel(), logits.numpy(), rtol=1e-6)
    with pytest.raises(DataError, match="user ID embeddings"):
        model_embeddings(model, users, items, None, item_ids)


def test_evaluate_models_scores_an_id_model_by_vocabulary_rows():
    # Catalogue a, b, c; users in the user-vector file's order w, v, u. By id:
    # u=(1,0) scores a 3, b 2, c 0; b is u's training item -> ranking a, c; test c: rank 2.
    # v=(0,1) scores c 3, b 2, a 0; c is v's training item -> ranking b, a; test a: rank 2.
    # (Item rows by catalogue position would rank c first for u and a first for v.)
    items = Vectors(np.ones((3, 2), np.float32), ["a", "b", "c"])
    users = Vectors(np.ones((3, 2), np.float32), ["w", "v", "u"])
    train = Interactions(np.array(["u", "v", "w"]), np.array(["b", "c", "a"]))
    test = Interactions(np.array(["u", "v", "w"]), np.array(["c", "a", "b"]))
    report = evaluate_models(
        items, train, test, models={"ids": _hand_id_model()},
        vocabularies=HAND_VOCABULARIES, user_vectors=users, ks=[1, 2],
    )  # fmt: skip
    m = report["ids"]
    assert m["users"] == 2 and m["recall@1"] == 0 and m["recall@2"] == 1
    assert m["mrr"] == pytest.approx(1 / 2)  # MRR = mean(1/2, 1/2)
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))  # (1/log2(3)) / (1/log2(2))
    # "w" has no row in the user vocabulary: out of the evaluation for every method
    assert report["protocol"]["test_pairs_user_not_in_vocabulary"] == 1
    assert report["popularity"]["users"] == 2


def test_evaluate_models_keeps_vectors_and_id_models_side_by_side():
    items = Vectors(np.eye(3, 2, dtype=np.float32) + 1, ["a", "b", "c"])
    users = Vectors(np.ones((2, 2), np.float32), ["u", "v"])
    train = Interactions(np.array(["u", "v"]), np.array(["b", "c"]))
    test = Interactions(np.array(["u", "v"]), np.array(["c", "a"]))
    vectors_model = TwoTowerModel(ModelConfig(user_dim=2, item_dim=2, tower=(4,))).eval()
    report = evaluate_models(
        items, train, test, model=vectors_model, models={"ids": _hand_id_model()},
        vocabularies=HAND_VOCABULARIES, user_vectors=users, ks=[2],
    )  # fmt: skip
    single = evaluate_models(items, train, test, model=vectors_model, user_vectors=users, ks=[2])
    assert report["model"] == single["model"]
    assert report["ids"]["recall@2"] == 1.0


def test_evaluate_models_refuses_id_models_without_matching_vocabularies():
    items = Vectors(np.ones((3, 2), np.float32), ["a", "b", "c"])
    users = Vectors(np.ones((2, 2), np.float32), ["u", "v"])
    train = Interactions(np.array(["u"]), np.array(["a"]))
    test = Interactions(np.array(["v"]), np.array(["b"]))
    models = {"ids": _hand_id_model()}
    with pytest.raises(DataError, match="pass vocabularies"):
        evaluate_models(items, train, test, models=models, user_vectors=users)
    with pytest.raises(DataError, match="not in the item vocabulary, e.g. 'b'"):
        evaluate_models(items, train, test, models=models, user_vectors=users,
                        vocabularies={"user": ["v", "u"], "item": ["c", "a", "x"]})  # fmt: skip
    with pytest.raises(DataError, match="has 3 item id rows, the item vocabulary 2"):
        evaluate_models(items, train, test, models=models, user_vectors=users,
                        vocabularies={"user": ["v", "u"], "item": ["a", "b"]})  # fmt: skip
    with pytest.raises(ValueError, match="reserved"):
        evaluate_models(items, train, test, models={"popularity": TwoTowerModel()})


def _hand_vectors_model() -> TwoTowerModel:
    """Vectors only, identity towers, w = 1: logit(u, v) = relu(u) · relu(v)."""
    model = TwoTowerModel(ModelConfig(user_dim=2, item_dim=2, tower=(2,)))
    with torch.no_grad():
        for tower in (model.user_tower, model.item_tower):
            tower[0].weight.copy_(torch.eye(2))
            tower[0].bias.zero_()
        model.output.weight.fill_(1.0)
    return model.eval()


def test_evaluate_command_ranks_the_catalogue_for_vectors_and_id_models(tmp_path):
    # The same geometry twice: as pretrained vectors (u=(1,0), v=(0,1); a=(3,0), b=(2,2),
    # c=(0,3)) for a vectors-only model, and as ID embeddings for an ID model. u's ranking
    # without its training item b is a, c; v's without c is b, a; test c and a: both rank 2.
    write_vectors(tmp_path / "items.txt", Vectors(np.array([[3, 0], [2, 2], [0, 3]], np.float32),
                                                  ["a", "b", "c"]))  # fmt: skip
    write_vectors(tmp_path / "users.txt", Vectors(np.eye(2, dtype=np.float32), ["u", "v"]))
    (tmp_path / "train.csv").write_text("user,item,timestamp\nu,b,1\nv,c,2\n")
    (tmp_path / "test.csv").write_text("user,item,timestamp\nu,c,3\nv,a,4\n")
    one, pair, row = np.ones(1, np.float32), np.ones((1, 2), np.float32), np.zeros(1, np.int64)
    chunk = SampleChunk(one, pair, pair, row, row)
    write_dataset(tmp_path / "train_data", [chunk], vocabularies=HAND_VOCABULARIES)
    save_run(tmp_path / "vectors_run", _hand_vectors_model())
    save_run(
        tmp_path / "ids_run", _hand_id_model(), {"data": {"train": str(tmp_path / "train_data")}}
    )
    # the ID model's vectors are ignored (use_vectors=False): any 2-d user vectors do
    options = ["--test", str(tmp_path / "test.csv"), "--train", str(tmp_path / "train.csv"),
               "--items", str(tmp_path / "items.txt"),
               "--user-vectors", str(tmp_path / "users.txt"), "--k", "1,2", "--json"]  # fmt: skip
    for run in ("vectors_run", "ids_run"):
        result = CliRunner().invoke(app, ["evaluate", str(tmp_path / run), *options])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        m = report["model"]
        assert (m["users"], m["recall@1"], m["recall@2"]) == (2, 0.0, 1.0), run
        assert m["mrr"] == pytest.approx(1 / 2)  # MRR = mean(1/2, 1/2)
        assert {"popularity", "pretrained", "protocol"} <= set(report)
    # an ID model whose run names no data set, and no --vocab: an actionable error
    save_run(tmp_path / "bare_ids_run", _hand_id_model())
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "bare_ids_run"), *options])
    assert result.exit_code == 2 and "--vocab" in result.output
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "bare_ids_run"),
            *options,
            "--vocab",
            str(tmp_path / "train_data"),
        ],
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["model"]["recall@2"] == 1.0
