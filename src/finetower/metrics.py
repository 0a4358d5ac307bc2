"""Pointwise metrics: accuracy, log-loss and AUC (exact, and streaming in bounded memory)."""

from __future__ import annotations

import numpy as np
import torch

AUC_BINS = 1 << 14


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties count one half); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank over runs of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class StreamingMetrics:
    """Accumulates loss, accuracy and a binned AUC over batches of logits.

    The AUC bins probabilities into AUC_BINS buckets (like Keras' thresholded AUC, finer),
    so memory stays bounded however many samples pass.
    """

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.loss_count = 0
        self.correct = 0
        self.count = 0
        self.positives = torch.zeros(AUC_BINS, dtype=torch.float64)
        self.negatives = torch.zeros(AUC_BINS, dtype=torch.float64)

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        loss_sum: float,
        loss_count: int | None = None,
    ) -> None:
        """Add a batch: pointwise logits and labels, and the loss summed over `loss_count`
        terms (default: one per sample; the softmax loss has one per positive)."""
        logits, labels = logits.detach().float().cpu(), labels.detach().float().cpu()
        self.loss_sum += float(loss_sum)
        self.loss_count += len(labels) if loss_count is None else int(loss_count)
        self.correct += int(((logits > 0).float() == labels).sum())
        self.count += len(labels)
        bins = (torch.sigmoid(logits) * (AUC_BINS - 1)).round().long()
        positive = labels > 0.5
        self.positives += torch.bincount(bins[positive], minlength=AUC_BINS).double()
        self.negatives += torch.bincount(bins[~positive], minlength=AUC_BINS).double()

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.loss_count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)

    @property
    def auc(self) -> float:
        n_pos, n_neg = float(self.positives.sum()), float(self.negatives.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        # P(score_pos > score_neg) + 0.5 * P(tie), over bins in ascending order
        negatives_below = torch.cumsum(self.negatives, 0) - self.negatives
        wins = (self.positives * (negatives_below + 0.5 * self.negatives)).sum()
        return float(wins) / (n_pos * n_neg)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}auc": self.auc,
        }

    def state(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The accumulators, for a checkpoint taken in the middle of an epoch."""
        sums = {
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "correct": self.correct,
            "count": self.count,
        }
        return sums, {"auc_positives": self.positives, "auc_negatives": self.negatives}

    def load_state(self, sums: dict[str, float], tensors: dict[str, torch.Tensor]) -> None:
        self.loss_sum = float(sums.get("loss_sum", 0.0))
        self.loss_count = int(sums.get("loss_count", 0))
        self.correct = int(sums.get("correct", 0))
        self.count = int(sums.get("count", 0))
        if "auc_positives" in tensors:
            self.positives = tensors["auc_positives"].clone()
            self.negatives = tensors["auc_negatives"].clone()
