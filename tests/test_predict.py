import numpy as np
import pytest
import torch

from finetower.errors import DataError
from finetower.model import ModelConfig, TwoTowerModel
from finetower.predict import embed_file, predict_file, tower_outputs
from finetower.textformat import read_text_samples, write_text_samples
from finetower.vectors import Vectors, is_word2vec_binary, read_vectors, write_vectors


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = TwoTowerModel(ModelConfig(user_dim=8, item_dim=6, tower=(16, 4))).eval()
    torch.nn.init.normal_(model.output.bias)
    return model


def test_predict_writes_probabilities_in_input_order(model, tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(300, 8)), rng.normal(size=(300, 6))
    labels = rng.integers(0, 5, 300)  # the label column is ignored: any number is fine
    write_text_samples(tmp_path / "in.txt", labels, users, items)
    assert predict_file(model, tmp_path / "in.txt", tmp_path / "p.txt", batch_size=64) == 300
    written = np.loadtxt(tmp_path / "p.txt")
    samples = read_text_samples(tmp_path / "in.txt", 8, binary_labels=False)
    with torch.no_grad():
        u, v = torch.from_numpy(samples.users), torch.from_numpy(samples.items)
        expected = model.predict_proba(u, v).numpy()
        # predict equals the sigmoid of the folded query . item embedding + bias
        folded = tower_outputs(model, "user", samples.users, for_retrieval=True)
        item_emb = tower_outputs(model, "item", samples.items)
        via_towers = 1 / (1 + np.exp(-((folded * item_emb).sum(1) + model.output_bias)))
    np.testing.assert_allclose(written, expected, atol=1e-7)
    np.testing.assert_allclose(via_towers, expected, atol=1e-6)


def test_predict_refuses_lines_of_the_wrong_width(model, tmp_path):
    write_text_samples(tmp_path / "in.txt", [1], np.ones((1, 8)), np.ones((1, 5)))
    with pytest.raises(DataError, match="line 1.*expected 15 fields"):
        predict_file(model, tmp_path / "in.txt", tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize("binary", [False, True])
def test_embed_word2vec_in_word2vec_out_with_ids(model, tmp_path, binary):
    rng = np.random.default_rng(1)
    vectors = Vectors(rng.normal(size=(10, 6)).astype(np.float32), [f"item{i}" for i in range(10)])
    write_vectors(tmp_path / "items.w2v", vectors, binary=binary)
    embed_file(model, "item", tmp_path / "items.w2v", tmp_path / "out.w2v")
    out = read_vectors(tmp_path / "out.w2v")
    assert is_word2vec_binary(tmp_path / "out.w2v") == binary
    assert out.ids == vectors.ids
    with torch.no_grad():
        expected = model.item_tower(torch.from_numpy(vectors.vectors)).numpy()
    np.testing.assert_allclose(out.vectors, expected, atol=1e-6)


def test_embed_npy_user_side_for_retrieval(model, tmp_path):
    users = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    np.save(tmp_path / "u.npy", users)
    embed_file(model, "user", tmp_path / "u.npy", tmp_path / "q.npy", for_retrieval=True)
    with torch.no_grad():
        expected = model.query_embedding(torch.from_numpy(users)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), expected, atol=1e-6)


def test_embed_refuses_vectors_of_the_wrong_size(model, tmp_path):
    np.save(tmp_path / "u.npy", np.ones((3, 7), dtype=np.float32))
    with pytest.raises(DataError, match="size 7, the model's user tower takes 8"):
        embed_file(model, "user", tmp_path / "u.npy", tmp_path / "q.npy")
