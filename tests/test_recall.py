"""Recall from an index directory: the flat index ranks exactly like the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import finetower.cli.retrieval  # noqa: F401  (registers index, recall, evaluate)
from finetower.cli.app import app
from finetower.errors import ArtifactError, DataError
from finetower.model import TwoTowerModel
from finetower.recall import Recaller, build_item_index
from finetower.runs import save_run
from finetower.user_vectors import user_vector
from finetower.vectors import Vectors, write_vectors

N_ITEMS = 3000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("recall")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 128))
    vectors = centres[rng.integers(0, 30, N_ITEMS)] + 0.5 * rng.normal(size=(N_ITEMS, 128))
    items = Vectors(vectors.astype(np.float32), [f"m{i}" for i in range(N_ITEMS)])
    write_vectors(root / "items.txt", items)
    users = Vectors(rng.normal(size=(4, 128)).astype(np.float32), ["alice", "bob", "carol", "dan"])
    write_vectors(root / "users.txt", users)
    torch.manual_seed(0)
    model = TwoTowerModel()
    with torch.no_grad():
        model.output.bias.fill_(0.3)
    save_run(root / "run", model)
    torch.manual_seed(1)
    save_run(root / "other_run", TwoTowerModel())
    build_item_index(root / "run", root / "items.txt", root / "flat", backend="flat")
    return {"root": root, "items": items, "users": users, "model": model.eval()}


def model_top(model, user_vec, items, k):
    """Top k ids and probabilities by the model itself over all items (`finetower predict`)."""
    with torch.no_grad():
        users = torch.from_numpy(np.repeat(user_vec[None], len(items), 0))
        proba = model.predict_proba(users, torch.from_numpy(items.vectors)).numpy()
    order = np.argsort(-proba, kind="stable")[:k]
    return [items.ids[i] for i in order], proba[order]


def test_flat_top_100_equals_model_top_100_over_all_items(world):
    recaller = Recaller(world["root"] / "flat")
    rng = np.random.default_rng(5)
    for _ in range(10):
        history = [f"m{i}" for i in rng.integers(0, N_ITEMS, 8)]
        result = recaller.for_history(history, 100)
        vector, _ = user_vector(world["items"], history)
        ids, proba = model_top(world["model"], vector, world["items"], 100)
        got = [item["id"] for item in result["items"]]
        # ties aside: every returned probability equals the model's at that rank
        np.testing.assert_allclose([item["score"] for item in result["items"]], proba, rtol=1e-5)
        assert len(set(got) & set(ids)) >= 99
        assert result["model"] == recaller.fingerprint


def test_exclude_seen_and_unknown_history_ids(world):
    recaller = Recaller(world["root"] / "flat")
    top = recaller.for_history(["m1", "m2"], 5)
    seen = [item["id"] for item in top["items"][:2]]
    result = recaller.for_history([*seen, "nope"], 5, exclude_seen=True)
    assert len(result["items"]) == 5
    assert not {item["id"] for item in result["items"]} & set(seen)
    assert result["unknown_history"] == 1 and result["history"] == 3
    with pytest.raises(DataError, match="none of the 1 history items"):
        recaller.for_history(["nope"], 5)


def test_user_id_lookup_equals_its_raw_vector(world):
    recaller = Recaller(world["root"] / "flat", user_vectors=world["root"] / "users.txt")
    assert recaller.for_user("bob", 10) == recaller.for_user_vector(world["users"].vectors[1], 10)
    with pytest.raises(DataError, match="'zed' has no vector"):
        recaller.for_user("zed")


def test_a_run_with_another_fingerprint_is_refused(world):
    with pytest.raises(ArtifactError, match="rebuild the index"):
        Recaller(world["root"] / "flat", run_dir=world["root"] / "other_run")


def test_cli_index_then_recall_json(world, tmp_path):
    runner = CliRunner()
    root = world["root"]
    out = tmp_path / "hnsw"
    result = runner.invoke(
        app,
        ["index", str(root / "run"), "--items", str(root / "items.txt"), "--out", str(out),
         "--backend", "hnsw", "--param", "ef_search=300", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recall", str(out), "--history", "m1,m2,m3", "--k", "7", "--json"])
    assert result.exit_code == 0, result.output
    import json

    answer = json.loads(result.stdout)
    assert len(answer["items"]) == 7 and set(answer["items"][0]) == {"id", "score"}
    assert answer["model"] == Recaller(out).fingerprint
    result = runner.invoke(app, ["recall", str(out), "--history", "x", "--user", "bob"])
    assert result.exit_code != 0
