"""Folding: query · item + bias is the model's logit for every pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetower.errors import DataError
from finetower.export import folded_queries, item_embeddings, user_embeddings
from finetower.model import ModelConfig, TwoTowerModel


def _model(seed: int = 0, **config) -> TwoTowerModel:
    torch.manual_seed(seed)
    model = TwoTowerModel(ModelConfig(**config)).eval()
    with torch.no_grad():  # a non-zero bias, so the test sees it added
        model.output.bias.fill_(-0.7)
    return model


@pytest.mark.parametrize("config", [{}, {"tower": (32, 16), "activation": "tanh"}])
def test_folded_query_dot_item_plus_bias_equals_model_logits(config):
    model = _model(**config)
    rng = np.random.default_rng(0)
    users = rng.normal(size=(50, 128)).astype(np.float32)
    items = rng.normal(size=(300, 128)).astype(np.float32)
    queries = folded_queries(model, users, batch_rows=7)  # odd batches: the seams must not show
    embedded = item_embeddings(model, items, batch_rows=64)
    folded = queries @ embedded.T + model.output_bias
    with torch.no_grad():
        u = torch.from_numpy(users).repeat_interleave(len(items), 0)
        v = torch.from_numpy(items).repeat(len(users), 1)
        logits = model(u, v).numpy().reshape(len(users), len(items))
    np.testing.assert_allclose(folded, logits, rtol=1e-5, atol=1e-5)


def test_raw_user_tower_dot_is_not_the_model_ranking():
    model = _model()
    rng = np.random.default_rng(1)
    users = rng.normal(size=(5, 128)).astype(np.float32)
    items = rng.normal(size=(200, 128)).astype(np.float32)
    raw = user_embeddings(model, users) @ item_embeddings(model, items).T
    folded = folded_queries(model, users) @ item_embeddings(model, items).T
    # the unfolded dot product ranks differently: why folding exists
    assert not np.array_equal(np.argsort(-raw, 1)[:, :10], np.argsort(-folded, 1)[:, :10])


def test_wrong_vector_size_is_refused_with_the_side_named():
    with pytest.raises(DataError, match="size 64, the model.s item tower takes 128"):
        item_embeddings(_model(), np.zeros((3, 64), np.float32))
