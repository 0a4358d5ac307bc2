"""In-batch sampled softmax for retrieval, as a sequence of small single-purpose steps.

For a batch of B positive (user, item) pairs, every other item of the batch is a negative
for each user: logits[i, j] = query_i · item_j, the label of row i is column i. Each step
below is a plain function on [B, B] logits so it can be tested on a hand-computed example.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MASK_VALUE = -1e9  # a logit that softmax turns into 0 without producing NaN


def in_batch_logits(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """queries [B, d], items [B, d] -> logits [B, B] (row: a user, column: an item)."""
    return queries @ items.T


def l2_normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (cosine similarity instead of dot product)."""
    return F.normalize(embeddings, dim=-1)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; a temperature below 1 sharpens the softmax."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return logits / temperature


def logq_correction(logits: torch.Tensor, item_log_q: torch.Tensor) -> torch.Tensor:
    """Subtract log q_j, the log-probability that item j lands in a batch, from column j.

    Popular items are in-batch negatives more often than uniform sampling would make them;
    without this the model learns to push popular items down (Yi et al., RecSys 2019).
    """
    return logits - item_log_q.unsqueeze(0)


def remove_accidental_hits(logits: torch.Tensor, item_keys: torch.Tensor) -> torch.Tensor:
    """Mask column j for row i when item j is the same item as row i's positive (j != i)."""
    same = item_keys.unsqueeze(0) == item_keys.unsqueeze(1)
    same.fill_diagonal_(False)
    return logits.masked_fill(same, MASK_VALUE)


def in_batch_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the diagonal as the target class."""
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def retrieval_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    item_keys: torch.Tensor,
    item_log_q: torch.Tensor | None,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """The whole sequence: [normalise] -> logits -> temperature -> logQ -> hits -> CE."""
    if normalize:
        queries, items = l2_normalize(queries), l2_normalize(items)
    logits = apply_temperature(in_batch_logits(queries, items), temperature)
    if item_log_q is not None:
        logits = logq_correction(logits, item_log_q)
    logits = remove_accidental_hits(logits, item_keys)
    return in_batch_softmax_loss(logits)


def item_keys_from_vectors(items: np.ndarray, seed: int = 0) -> np.ndarray:
    """An int64 identity per item row: rows with equal vectors get equal keys.

    Data without item ids (the recipe's text format) still needs to know when two samples
    share an item, for accidental hits and for item frequencies.
    """
    projection = np.random.default_rng(seed).normal(size=items.shape[1])
    keys = np.asarray(items, dtype=np.float64) @ projection
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def sampling_log_q(item_keys: np.ndarray) -> np.ndarray:
    """log of each item's share of all positives: its chance to appear as a batch member."""
    counts = np.bincount(item_keys)
    return np.log(counts / counts.sum())
