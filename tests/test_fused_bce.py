import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from finetower import objectives
from finetower.fused_bce import fused_bce_applies, fused_bce_step
from finetower.model import ModelConfig, TwoTowerModel
from finetower.train import TrainConfig, train


def autograd_loss_and_gradients(model, users, items, labels):
    model.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(users, items), labels)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(user_dim=24, item_dim=16, tower=(32, 12, 8))],
    ids=["recipe", "three-layer towers, unequal inputs"],
)
def test_gradients_and_loss_are_autograds(config):
    torch.manual_seed(0)
    model = TwoTowerModel(config)
    batch = 37  # not a power of two: the mean's division is not exact
    users, items = torch.randn(batch, config.user_dim), torch.randn(batch, config.item_dim)
    labels = (torch.rand(batch) > 0.5).float()
    expected_loss, expected = autograd_loss_and_gradients(model, users, items, labels)
    model.zero_grad(set_to_none=True)

    loss, logits = fused_bce_step(model, users, items, labels)

    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(logits, model(users, items).detach(), rtol=1e-6, atol=1e-6)
    for param, grad in zip(model.parameters(), expected, strict=True):
        assert param.grad is not None and param.grad.shape == param.shape
        torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-7)
    assert not loss.requires_grad and not logits.requires_grad


def test_gradients_are_replaced_not_accumulated():
    torch.manual_seed(1)
    model = TwoTowerModel(ModelConfig(user_dim=8, item_dim=8, tower=(4,)))
    users, items, labels = torch.randn(5, 8), torch.randn(5, 8), torch.ones(5)
    fused_bce_step(model, users, items, labels)
    first = [p.grad.clone() for p in model.parameters()]
    fused_bce_step(model, users, items, labels)
    for param, grad in zip(model.parameters(), first, strict=True):
        torch.testing.assert_close(param.grad, grad)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(activation="tanh"),
        ModelConfig(dropout=0.1),
        ModelConfig(user_ids=10, item_ids=10, id_dim=4),
    ],
    ids=["tanh", "dropout", "id embeddings"],
)
def test_models_it_cannot_train_are_left_to_autograd(config):
    assert not fused_bce_applies(TwoTowerModel(config))
    assert fused_bce_applies(TwoTowerModel(ModelConfig(tower=(32, 16))))


def test_training_with_it_ends_where_autograd_ends(sample_files, tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, seed=5)
    fused = train(sample_files["val"], tmp_path / "fused", config=config, progress=False)
    monkeypatch.setattr(objectives, "fused_bce_applies", lambda model: False)
    plain = train(sample_files["val"], tmp_path / "autograd", config=config, progress=False)

    a = load_file(tmp_path / "fused" / "model.safetensors")
    b = load_file(tmp_path / "autograd" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
    for got, want in zip(fused.history, plain.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
