"""ID towers: towers that take trainable ID embeddings, optionally beside the pretrained
vectors, initialised from those pretrained vectors — "fine-tune the embeddings" next to
the recipe's "pretrained vectors in, towers fine-tuned".

Ids unseen at pretraining start from N(0, s²), s the standard deviation of the pretrained
values, drawn from the run's seed, so they sit in the same range as the pretrained rows.
Without `init_from`, every row starts like a Keras Embedding: U(-0.05, 0.05).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from finetower.dataset import SampleDataset
from finetower.errors import DataError
from finetower.model import TwoTowerModel
from finetower.vectors import Vectors, read_vectors

PRETRAINED_FILES = {"user": "user_vectors.bin", "item": "item_vectors.bin"}


@dataclass
class IdTowers:
    """How the ID towers are built and trained."""

    init_from: str | None = None  # a `finetower pretrain` output directory
    freeze_epochs: int = 0  # embeddings frozen for the first N epochs
    use_vectors: bool = True  # concatenate the pretrained vectors to the embeddings
    id_dim: int | None = None  # default: the pretrained vectors' size

    def to_dict(self) -> dict:
        return asdict(self)


def vocabularies(samples: SampleDataset, path: str | Path) -> dict[str, list[str]]:
    if not isinstance(samples, SampleDataset) or not samples.has_ids:
        raise DataError(
            "ID towers need a data set with user and item ids (as `finetower samples` "
            "writes them); text files carry no ids",
            path,
        )
    return {side: samples.vocabulary(side) for side in ("user", "item")}


def initial_rows(
    vocabulary: list[str], pretrained: Vectors, dim: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Rows [len(vocabulary), dim] from `pretrained` by id; unseen ids drawn at random.

    Returns the rows and how many came from the pretrained vectors.
    """
    if pretrained.dim != dim:
        raise DataError(f"pretrained vectors have size {pretrained.dim}, id_dim is {dim}")
    index = pretrained.index()
    rows = np.array([index.get(str(key), -1) for key in vocabulary], dtype=np.int64)
    found = rows >= 0
    scale = float(pretrained.vectors.std()) if len(pretrained) else 0.05
    matrix = rng.normal(scale=scale, size=(len(vocabulary), dim)).astype(np.float32)
    matrix[found] = pretrained.vectors[rows[found]]
    return matrix, int(found.sum())


def initialise(model: TwoTowerModel, options: IdTowers, vocab: dict, seed: int) -> dict:
    """Copy pretrained vectors into the model's ID embeddings; return what was done."""
    if options.init_from is None:
        return {"init": "random"}
    report = {"init": str(options.init_from)}
    rng = np.random.default_rng([seed, 23])
    for side in ("user", "item"):
        embedding = model.user_id_embedding if side == "user" else model.item_id_embedding
        pretrained = read_vectors(Path(options.init_from) / PRETRAINED_FILES[side])
        matrix, found = initial_rows(vocab[side], pretrained, model.config.id_dim, rng)
        with torch.no_grad():
            embedding.weight.copy_(torch.from_numpy(matrix))
        report[f"{side}s_from_pretrained"] = found
        report[f"{side}s_random"] = len(vocab[side]) - found
    return report


def set_frozen(model: TwoTowerModel, frozen: bool) -> None:
    """Freeze or thaw the ID embeddings (Adam skips parameters without gradients)."""
    for embedding in (model.user_id_embedding, model.item_id_embedding):
        if embedding is not None:
            embedding.weight.requires_grad_(not frozen)
