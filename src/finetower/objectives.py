"""What a training step minimises: the recipe's pointwise BCE or in-batch softmax.

An objective takes the model and a batch and returns (loss, pointwise logits, loss terms);
the pointwise logits feed accuracy/AUC whatever the loss. `gradients` does the same and
leaves d loss / d parameter in every trainable parameter's `.grad`, for the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from finetower.dataset import Batch, Samples
from finetower.fused_bce import fused_bce_applies, fused_bce_step
from finetower.losses import retrieval_loss
from finetower.model import TwoTowerModel

LOSSES = ("bce", "softmax")


class BinaryCrossEntropy:
    """The recipe: sigmoid(w · (u ⊙ v) + b) against the 0/1 label, mean over the batch."""

    def __call__(self, model: TwoTowerModel, batch: Batch, reduction: str = "mean"):
        logits = model(batch.users, batch.items, batch.user_ids, batch.item_ids)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction=reduction)
        return loss, logits, len(batch)

    def gradients(self, model: TwoTowerModel, batch: Batch):
        """The recipe's model gets its gradients written out (finetower.fused_bce), which
        is faster at small batches; other models get autograd's."""
        if fused_bce_applies(model):
            loss, logits = fused_bce_step(model, batch.users, batch.items, batch.labels)
            return loss, logits, len(batch)
        return autograd_gradients(self, model, batch)


def autograd_gradients(objective, model: TwoTowerModel, batch: Batch):
    """(loss, logits, terms) of `objective`, its gradients left in the parameters."""
    loss, logits, terms = objective(model, batch)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logits, terms


@dataclass
class InBatchSoftmax:
    """Sampled softmax over the batch's positives; the other positives' items are negatives.

    Items are identified by their id where the data has ids, else by a random projection
    of their vector (equal vectors, equal key), which the recipe's id-less data needs for
    accidental hits and item frequencies.
    `keys`/`log_q` hold every training item's key and sampling log-probability.
    """

    projection: torch.Tensor
    keys: torch.Tensor | None = None
    log_q: torch.Tensor | None = None
    temperature: float = 1.0
    normalize: bool = False

    @classmethod
    def fit(
        cls, samples: Samples, *, seed: int, temperature: float, normalize: bool, logq: bool
    ) -> InBatchSoftmax:
        """Count the training positives' items to get log q (one pass over the data)."""
        projection = torch.from_numpy(
            np.random.default_rng([seed, 17]).normal(size=samples.item_dim)
        )
        objective = cls(projection, temperature=temperature, normalize=normalize)
        if logq:
            parts = []
            for chunk in samples.iter_chunks(shuffle=False):
                positive = chunk.labels > 0.5
                ids = None if chunk.item_ids is None else torch.from_numpy(chunk.item_ids[positive])
                parts.append(objective.item_keys(torch.from_numpy(chunk.items[positive]), ids))
            keys, counts = torch.unique(torch.cat(parts), return_counts=True)
            objective.keys = keys
            objective.log_q = torch.log(counts.double() / counts.sum()).float()
        return objective

    def item_keys(self, items: torch.Tensor, item_ids: torch.Tensor | None = None):
        if item_ids is not None:
            return item_ids.double()
        return items.double() @ self.projection.to(items.device)

    def batch_log_q(self, keys: torch.Tensor) -> torch.Tensor | None:
        if self.keys is None:
            return None
        table_keys, table_log_q = self.keys.to(keys.device), self.log_q.to(keys.device)
        at = torch.searchsorted(table_keys, keys).clamp(max=len(table_keys) - 1)
        found = table_keys[at] == keys
        # an item never seen among training positives counts as the rarest seen
        return torch.where(found, table_log_q[at], table_log_q.min())

    def __call__(self, model: TwoTowerModel, batch: Batch, reduction: str = "mean"):
        queries = model.query_embedding(batch.users, batch.user_ids)
        items = model.encode_items(batch.items, batch.item_ids)
        logits = (queries * items).sum(-1) + model.output.bias
        positive = batch.labels > 0.5
        n_positive = int(positive.sum())
        if n_positive < 2:  # a softmax over one item teaches nothing
            return logits.sum() * 0.0, logits, 0
        ids = None if batch.item_ids is None else batch.item_ids[positive]
        keys = self.item_keys(batch.items[positive], ids)
        loss = retrieval_loss(
            queries[positive],
            items[positive],
            keys,
            self.batch_log_q(keys),
            temperature=self.temperature,
            normalize=self.normalize,
        )
        return (loss * n_positive if reduction == "sum" else loss), logits, n_positive

    def gradients(self, model: TwoTowerModel, batch: Batch):
        return autograd_gradients(self, model, batch)
