"""The two towers' clients: the model, input and outputs each serves, one shared __init__."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from serving.client.errors import TowerMismatchError
from serving.client.tower import TowerClient


class UserTowerOutput(NamedTuple):
    query: np.ndarray  # float32 [batch, d]: user_embedding ⊙ w (output weights folded in)
    user_embedding: np.ndarray  # float32 [batch, d]
    served_version: int  # the user-tower version that answered
    bias: np.ndarray  # float32 [batch, 1]: the output layer's b


class ItemTowerOutput(NamedTuple):
    item_embedding: np.ndarray  # float32 [batch, d]
    served_version: int


USER_TOWER_OUTPUTS = UserTowerOutput._fields[:2] + ("bias",)
ITEM_TOWER_OUTPUTS = ("item_embedding",)


class _Tower(TowerClient):
    """A tower of the DSSM: the class says its model name, input and outputs; `embedding_dim`
    (when given) is checked against the served outputs of that size."""

    MODEL_NAME: ClassVar[str]
    INPUT_NAME: ClassVar[str]
    OUTPUTS: ClassVar[tuple[str, ...]]
    EMBEDDINGS: ClassVar[tuple[str, ...]]  # the outputs of size `embedding_dim`
    FIXED_DIMS: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        target: str,
        model_name: str | None = None,
        version: int | None = None,
        *,
        version_label: str | None = None,
        input_dim: int = 128,
        embedding_dim: int | None = None,
        timeout_s: float = 2.0,
        retries: int = 3,
        **options,
    ):
        dims = dict(self.FIXED_DIMS)
        if embedding_dim is not None:
            dims.update(dict.fromkeys(self.EMBEDDINGS, embedding_dim))
        super().__init__(
            target,
            model_name or self.MODEL_NAME,
            input_name=self.INPUT_NAME,
            input_dim=input_dim,
            outputs=self.OUTPUTS,
            output_dims=dims,
            version=version,
            version_label=version_label,
            timeout_s=timeout_s,
            retries=retries,
            **options,
        )


class UserTowerClient(_Tower):
    """The user tower: `embed(user_vectors)` -> UserTowerOutput(query, user_embedding,
    served_version, bias). `options`: signature_name, backoff_s, max_backoff_s."""

    MODEL_NAME = "user_tower"
    INPUT_NAME = "user_vector"
    OUTPUTS = USER_TOWER_OUTPUTS
    EMBEDDINGS = ("query", "user_embedding")
    FIXED_DIMS = {"bias": 1}

    def _check(self, signatures, what, served_spec):
        sizes = super()._check(signatures, what, served_spec)
        if sizes["query"] != sizes["user_embedding"]:
            raise TowerMismatchError(
                f"{what} on {self.target}: query has size {sizes['query']}, user_embedding "
                f"{sizes['user_embedding']}: not a folded user tower"
            )
        return sizes

    def embed(
        self,
        user_vectors,
        version: int | None = None,
        *,
        version_label: str | None = None,
        deadline: float | None = None,
    ) -> UserTowerOutput:
        """Embed raw user vectors float32 [batch, input_dim]."""
        outputs, served = self.predict(
            user_vectors, version, version_label=version_label, deadline=deadline
        )
        return UserTowerOutput(outputs["query"], outputs["user_embedding"], served, outputs["bias"])


class ItemTowerClient(_Tower):
    """The item tower: `embed(item_vectors)` -> ItemTowerOutput(item_embedding,
    served_version). `options`: signature_name, backoff_s, max_backoff_s."""

    MODEL_NAME = "item_tower"
    INPUT_NAME = "item_vector"
    OUTPUTS = ITEM_TOWER_OUTPUTS
    EMBEDDINGS = ("item_embedding",)

    def embed(
        self,
        item_vectors,
        version: int | None = None,
        *,
        version_label: str | None = None,
        deadline: float | None = None,
    ) -> ItemTowerOutput:
        """Embed raw item vectors float32 [batch, input_dim]."""
        outputs, served = self.predict(
            item_vectors, version, version_label=version_label, deadline=deadline
        )
        return ItemTowerOutput(outputs["item_embedding"], served)
