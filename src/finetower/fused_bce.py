"""The recipe's training step with its gradients written out: BCE of a ReLU two-tower model.

At batch 128 a step is mostly bookkeeping, not arithmetic: autograd records some thirty
small operations, and `loss.backward()` alone costs ~90 µs before it computes anything
(measured on the 2-core machine; the four matrix products that do the work take ~180 µs).
Computing the gradients directly, without autograd, made the step 1.2-1.9x faster at
batch 128 (`benchmarks/bench_train.py`, bare loops, eleven runs). The gradients are autograd's
(`tests/test_fused_bce.py` holds them against it); training uses this path whenever the
model qualifies (every tower layer Linear + ReLU, no dropout, no ID embeddings) and the
loss is BCE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finetower.model import TwoTowerModel


def fused_bce_applies(model: TwoTowerModel) -> bool:
    """Whether `fused_bce_step` can train this model (else autograd does)."""
    config = model.config
    return config.activation == "relu" and not config.dropout and not config.has_ids


@torch.no_grad()
def fused_bce_step(
    model: TwoTowerModel, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set every parameter's `.grad` to d(mean BCE)/d(parameter); return (loss, logits).

    users [batch, user_dim], items [batch, item_dim], labels [batch] -> loss [], logits
    [batch]. Gradients are replaced, not accumulated: no `zero_grad` needed.
    """
    user_layers, item_layers = _linears(model.user_tower), _linears(model.item_tower)
    user_outputs = _tower_forward(users, user_layers)
    item_outputs = _tower_forward(items, item_layers)
    product = user_outputs[-1] * item_outputs[-1]
    output = model.output
    logits = torch.addmm(output.bias, product, output.weight.t()).squeeze(1)
    loss = F.binary_cross_entropy_with_logits(logits, labels)

    # d mean BCE / d logit = (sigmoid(logit) - label) / batch, as torch computes it
    grad_logits = (torch.sigmoid(logits) - labels).div_(len(labels))
    output.weight.grad = grad_logits.unsqueeze(0) @ product  # [1, dim]
    output.bias.grad = grad_logits.sum(0, keepdim=True)  # [1]
    grad_product = grad_logits.unsqueeze(1) * output.weight  # [batch, dim]
    _tower_backward(grad_product * item_outputs[-1], user_outputs, user_layers)
    _tower_backward(grad_product * user_outputs[-1], item_outputs, item_layers)
    return loss, logits


def _linears(tower: nn.Sequential) -> list[nn.Linear]:
    return [layer for layer in tower if isinstance(layer, nn.Linear)]


def _tower_forward(x: torch.Tensor, layers: list[nn.Linear]) -> list[torch.Tensor]:
    """[input, output of layer 1, ..., output of the last layer]."""
    outputs = [x]
    for layer in layers:
        outputs.append(torch.addmm(layer.bias, outputs[-1], layer.weight.t()).relu_())
    return outputs


def _tower_backward(
    grad: torch.Tensor, outputs: list[torch.Tensor], layers: list[nn.Linear]
) -> None:
    """Set the tower's gradients, given `grad` = d loss / d (the tower's output)."""
    for k in range(len(layers) - 1, -1, -1):
        grad = grad * outputs[k + 1].sign()  # ReLU' is 0 or 1: the sign of its output
        layers[k].weight.grad = grad.t() @ outputs[k]
        layers[k].bias.grad = grad.sum(0)
        if k:
            grad = grad @ layers[k].weight
