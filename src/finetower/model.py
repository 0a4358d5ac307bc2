"""The two-tower model: the recipe's DSSM and its configurable generalisation.

Default = the Keras recipe exactly: user [128] -> Dense(64, relu); item [128] ->
Dense(64, relu); the two outputs multiplied element-wise; Dense(1, sigmoid).
16,577 parameters, Keras' initialisation (Glorot-uniform kernels, zero biases).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a two-tower model; the defaults are the recipe."""

    user_dim: int = 128
    item_dim: int = 128
    tower: tuple[int, ...] = (64,)
    activation: str = "relu"
    dropout: float = 0.0
    kind: str = field(default="dssm")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tower", tuple(int(h) for h in self.tower))
        if not self.tower or any(h <= 0 for h in self.tower):
            raise ValueError(f"tower sizes must be positive, got {self.tower}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.user_dim <= 0 or self.item_dim <= 0:
            raise ValueError("user_dim and item_dim must be positive")

    @property
    def embedding_dim(self) -> int:
        return self.tower[-1]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tower"] = list(self.tower)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _tower(in_dim: int, sizes: tuple[int, ...], activation: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in sizes:
        layers.append(nn.Linear(in_dim, size))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = size
    return nn.Sequential(*layers)


class TwoTowerModel(nn.Module):
    """Scores a (user, item) pair as `w · (user_tower(u) ⊙ item_tower(v)) + b`.

    `forward` returns logits [batch]; `predict_proba` the click probability.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.user_tower = _tower(c.user_dim, c.tower, c.activation, c.dropout)
        self.item_tower = _tower(c.item_dim, c.tower, c.activation, c.dropout)
        self.output = nn.Linear(c.embedding_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' defaults: Glorot-uniform kernels, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [batch, user_dim], items [batch, item_dim] -> logits [batch]."""
        return self.output(self.user_tower(users) * self.item_tower(items)).squeeze(-1)

    def predict_proba(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(users, items))

    def query_embedding(self, users: torch.Tensor) -> torch.Tensor:
        """The user tower with the output weights folded in: `w ⊙ user_tower(u)` [batch, dim].

        `query_embedding(u) @ item_tower(v).T + output.bias` equals the model's logits, so
        an inner-product index over item embeddings ranks exactly like the model.
        """
        return self.user_tower(users) * self.output.weight[0]

    @property
    def output_bias(self) -> float:
        return float(self.output.bias.detach()[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
