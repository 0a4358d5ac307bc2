"""The two-tower model: the recipe's DSSM and its configurable generalisation.

Default = the Keras recipe exactly: user [128] -> Dense(64, relu); item [128] ->
Dense(64, relu); the two outputs multiplied element-wise; Dense(1, sigmoid).
16,577 parameters, Keras' initialisation (Glorot-uniform kernels, zero biases).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
    user_ids: int = 0
    item_ids: int = 0
    id_dim: int = 0
    use_vectors: bool = True

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
        if (self.user_ids or self.item_ids) and self.id_dim <= 0:
            raise ValueError("ID embeddings need id_dim > 0")
        if not self.use_vectors and not (self.user_ids and self.item_ids):
            raise ValueError("without the vectors, both towers need ID embeddings")

    @property
    def has_ids(self) -> bool:
        return bool(self.user_ids or self.item_ids)

    def tower_input(self, side: str) -> int:
        """Width of a tower's input: the pretrained vector and/or the ID embedding."""
        vector = self.user_dim if side == "user" else self.item_dim
        ids = self.user_ids if side == "user" else self.item_ids
        return (vector if self.use_vectors else 0) + (self.id_dim if ids else 0)

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

    A tower's input is the pretrained vector (the recipe) and/or a trainable ID embedding
    (`user_ids`/`item_ids` > 0 in the config), concatenated. `forward` returns logits
    [batch]; `predict_proba` the click probability. ID arguments are needed only by
    models with ID embeddings.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.user_id_embedding = nn.Embedding(c.user_ids, c.id_dim) if c.user_ids else None
        self.item_id_embedding = nn.Embedding(c.item_ids, c.id_dim) if c.item_ids else None
        self.user_tower = _tower(c.tower_input("user"), c.tower, c.activation, c.dropout)
        self.item_tower = _tower(c.tower_input("item"), c.tower, c.activation, c.dropout)
        self.output = nn.Linear(c.embedding_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' defaults: Glorot-uniform kernels, zero biases, embeddings U(-0.05, 0.05)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.uniform_(module.weight, -0.05, 0.05)

    def _tower_input(self, vectors, ids, embedding: nn.Embedding | None) -> torch.Tensor:
        if embedding is None:
            return vectors
        if ids is None:
            raise ValueError("this model has ID embeddings: pass the ids")
        looked_up = embedding(ids)
        return torch.cat([vectors, looked_up], -1) if self.config.use_vectors else looked_up

    def encode_users(self, users: torch.Tensor, user_ids: torch.Tensor | None = None):
        """The user tower's output [batch, dim]."""
        return self.user_tower(self._tower_input(users, user_ids, self.user_id_embedding))

    def encode_items(self, items: torch.Tensor, item_ids: torch.Tensor | None = None):
        """The item tower's output [batch, dim]: what goes into the index."""
        return self.item_tower(self._tower_input(items, item_ids, self.item_id_embedding))

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        user_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """users [batch, user_dim], items [batch, item_dim] -> logits [batch]."""
        product = self.encode_users(users, user_ids) * self.encode_items(items, item_ids)
        return self.output(product).squeeze(-1)

    def predict_proba(self, users: torch.Tensor, items: torch.Tensor, *ids) -> torch.Tensor:
        return torch.sigmoid(self.forward(users, items, *ids))

    def query_embedding(
        self, users: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The user tower with the output weights folded in: `w ⊙ user_tower(u)` [batch, dim].

        `query_embedding(u) @ encode_items(v).T + output.bias` equals the model's logits, so
        an inner-product index over item embeddings ranks exactly like the model.
        """
        return self.encode_users(users, user_ids) * self.output.weight[0]

    @property
    def output_bias(self) -> float:
        return float(self.output.bias.detach()[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
