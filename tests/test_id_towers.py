import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from finetower.datasets import synthetic_world
from finetower.errors import DataError
from finetower.id_towers import IdTowers, initial_rows
from finetower.pretrain import PretrainConfig, pretrain
from finetower.runs import load_run
from finetower.samples import SampleConfig, build_samples
from finetower.train import TrainConfig, train
from finetower.vectors import Vectors, read_vectors


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("idworld")
    w = synthetic_world(n_users=200, n_items=100, seed=2)
    pq.write_table(w.source, root / "source.parquet")
    pq.write_table(w.target, root / "target.parquet")
    pretrain(root / "source.parquet", root / "vectors", PretrainConfig(dim=8, min_count=1))
    build_samples(
        root / "target.parquet", root / "vectors", root / "samples", config=SampleConfig(text=False)
    )
    return root


def item_rows(run, world):
    model = load_run(run)
    vocab = (world / "samples" / "train" / "item_vocab.txt").read_text().splitlines()
    return model.item_id_embedding.weight.detach().numpy(), vocab


def test_initial_rows_copy_pretrained_and_draw_the_unseen():
    pretrained = Vectors(np.arange(6, dtype=np.float32).reshape(3, 2), ["a", "b", "c"])
    rows, found = initial_rows(["c", "zz", "a"], pretrained, 2, np.random.default_rng(0))
    assert found == 2
    np.testing.assert_array_equal(rows[[0, 2]], [[4, 5], [0, 1]])
    assert not np.isin(rows[1], pretrained.vectors).any()


def test_frozen_embeddings_keep_the_pretrained_vectors(world, tmp_path):
    result = train(
        world / "samples" / "train",
        tmp_path / "run",
        val_data=world / "samples" / "val",
        config=TrainConfig(epochs=1),
        id_towers=IdTowers(init_from=str(world / "vectors"), freeze_epochs=1),
        progress=False,
    )
    weights, vocab = item_rows(tmp_path / "run", world)
    pretrained = read_vectors(world / "vectors" / "item_vectors.bin")
    index = pretrained.index()
    known = [i for i, key in enumerate(vocab) if key in index]
    assert known
    np.testing.assert_array_equal(
        weights[known], pretrained.vectors[[index[vocab[i]] for i in known]]
    )
    assert "val_auc" in result.history[0]


def test_unfrozen_embeddings_are_fine_tuned(world, tmp_path):
    train(
        world / "samples" / "train",
        tmp_path / "run",
        config=TrainConfig(epochs=1),
        id_towers=IdTowers(init_from=str(world / "vectors")),
        progress=False,
    )
    weights, vocab = item_rows(tmp_path / "run", world)
    pretrained = read_vectors(world / "vectors" / "item_vectors.bin")
    index = pretrained.index()
    first_known = next(i for i, key in enumerate(vocab) if key in index)
    assert not np.allclose(weights[first_known], pretrained.vectors[index[vocab[first_known]]])


def test_id_model_scores_with_ids_and_folds_like_the_recipe(world, tmp_path):
    train(
        world / "samples" / "train",
        tmp_path / "run",
        config=TrainConfig(epochs=1),
        id_towers=IdTowers(use_vectors=False, id_dim=16),
        progress=False,
    )
    model = load_run(tmp_path / "run")
    assert model.config.use_vectors is False and model.config.id_dim == 16
    users, items = torch.zeros(4, model.config.user_dim), torch.zeros(4, model.config.item_dim)
    uid, iid = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])
    with torch.no_grad():
        folded = (model.query_embedding(users, uid) * model.encode_items(items, iid)).sum(1)
        torch.testing.assert_close(folded + model.output_bias, model(users, items, uid, iid))


def test_text_data_has_no_ids(sample_files, tmp_path):
    with pytest.raises(DataError, match="need a data set with user and item ids"):
        train(sample_files["val"], tmp_path / "run", id_towers=IdTowers(), progress=False)
