"""Retrieval embeddings: item tower outputs and folded user queries.

The model scores a pair as `w · (user_tower(u) ⊙ item_tower(v)) + b`. Folding the output
weights into the user side, `query = w ⊙ user_tower(u)`, gives `query · item_tower(v) + b`
= the model's logit, so an inner-product index over item embeddings ranks exactly like the
model. Ranking by the raw towers' dot product (or L2) would not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finetower.errors import DataError
from finetower.model import TwoTowerModel

DEFAULT_BATCH_ROWS = 65_536


def _check_dim(vectors: np.ndarray, expected: int, side: str, source: str | Path | None) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != expected:
        size = vectors.shape[-1] if vectors.ndim else 0
        raise DataError(
            f"{side} vectors have size {size}, the model's {side} tower takes {expected}",
            source,
        )


def _check_vectors_only(model: TwoTowerModel) -> None:
    if model.config.has_ids:
        raise DataError("this model has ID embeddings: its towers need ids, not only vectors")


def _apply_in_batches(
    function, inputs: np.ndarray, out_dim: int, batch_rows: int, device: torch.device
) -> np.ndarray:
    """Run `function` over `inputs [n, d]` in batches of `batch_rows`; returns float32 [n, out_dim].

    Only one batch of activations is alive at a time, so memory is the output plus one batch.
    """
    output = np.empty((len(inputs), out_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_rows):
            # a copy: inputs may be a read-only memory map, which torch will not wrap
            batch = torch.from_numpy(np.array(inputs[start : start + batch_rows], np.float32))
            result = function(batch.to(device=device, dtype=torch.float32))
            output[start : start + len(batch)] = result.float().cpu().numpy()
    return output


def _run_tower(
    model: TwoTowerModel, side: str, function, vectors: np.ndarray, batch_rows: int, source
) -> np.ndarray:
    _check_vectors_only(model)
    expected = model.config.user_dim if side == "user" else model.config.item_dim
    _check_dim(vectors, expected, side, source)
    model.eval()
    device = next(model.parameters()).device
    return _apply_in_batches(function, vectors, model.config.embedding_dim, batch_rows, device)


def item_embeddings(
    model: TwoTowerModel,
    item_vectors: np.ndarray,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str | Path | None = None,
) -> np.ndarray:
    """Item tower outputs `[n_items, dim]` float32 for `item_vectors [n_items, item_dim]`."""
    return _run_tower(model, "item", model.encode_items, item_vectors, batch_rows, source)


def folded_queries(
    model: TwoTowerModel,
    user_vectors: np.ndarray,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str | Path | None = None,
) -> np.ndarray:
    """Folded queries `w ⊙ user_tower(u)` `[n_users, dim]` for `user_vectors [n_users, user_dim]`.

    `folded_queries(u) @ item_embeddings(v).T + model.output_bias` equals the model's logits.
    """
    return _run_tower(model, "user", model.query_embedding, user_vectors, batch_rows, source)


def user_embeddings(
    model: TwoTowerModel,
    user_vectors: np.ndarray,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str | Path | None = None,
) -> np.ndarray:
    """Raw user tower outputs `[n_users, dim]` (not folded: not for retrieval by dot product)."""
    return _run_tower(model, "user", model.encode_users, user_vectors, batch_rows, source)
