import torch

from finetower.model import ModelConfig, TwoTowerModel, count_parameters


def test_default_is_the_recipe_with_16577_parameters():
    model = TwoTowerModel()
    # 2 towers x (128*64 + 64) + (64 + 1) = 2 x 8,256 + 65
    assert count_parameters(model) == 16_577
    assert [type(m).__name__ for m in model.user_tower] == ["Linear", "ReLU"]
    assert model.output.weight.shape == (1, 64)


def test_keras_initialisation_zero_biases_glorot_kernels():
    model = TwoTowerModel()
    assert torch.all(model.user_tower[0].bias == 0)
    limit = (6 / (128 + 64)) ** 0.5  # glorot uniform bound
    assert model.user_tower[0].weight.abs().max() <= limit


def test_custom_towers():
    model = TwoTowerModel(ModelConfig(user_dim=32, item_dim=16, tower=(256, 64), dropout=0.1))
    expected = (32 * 256 + 256 + 256 * 64 + 64) + (16 * 256 + 256 + 256 * 64 + 64) + 65
    assert count_parameters(model) == expected
    logits = model(torch.randn(5, 32), torch.randn(5, 16))
    assert logits.shape == (5,)


def test_folded_query_dot_item_plus_bias_equals_logits():
    torch.manual_seed(0)
    model = TwoTowerModel().eval()
    torch.nn.init.normal_(model.output.bias)
    users, items = torch.randn(7, 128), torch.randn(7, 128)
    with torch.no_grad():
        folded = (model.query_embedding(users) * model.item_tower(items)).sum(1)
        torch.testing.assert_close(folded + model.output_bias, model(users, items))
        raw = (model.user_tower(users) * model.item_tower(items)).sum(1)
    assert not torch.allclose(raw + model.output_bias, model(users, items))
