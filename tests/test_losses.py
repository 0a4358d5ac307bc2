import math

import numpy as np
import pytest
import torch

from finetower.losses import (
    MASK_VALUE,
    apply_temperature,
    in_batch_logits,
    in_batch_softmax_loss,
    item_keys_from_vectors,
    l2_normalize,
    logq_correction,
    remove_accidental_hits,
    retrieval_loss,
    sampling_log_q,
)
from finetower.train import TrainConfig, train

Q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
V = torch.tensor([[3.0, 1.0], [1.0, 1.0]])


def test_in_batch_logits_are_all_pairs_of_query_and_item():
    # logits[i, j] = q_i . v_j: [[1*3+0*1, 1*1+0*1], [0*3+2*1, 0*1+2*1]]
    assert in_batch_logits(Q, V).tolist() == [[3.0, 1.0], [2.0, 2.0]]


def test_temperature_divides():
    assert apply_temperature(torch.tensor([[3.0, 1.0]]), 0.5).tolist() == [[6.0, 2.0]]
    with pytest.raises(ValueError):
        apply_temperature(torch.tensor([[1.0]]), 0.0)


def test_logq_subtracts_each_columns_log_probability():
    log_q = torch.log(torch.tensor([0.5, 0.25]))
    corrected = logq_correction(torch.tensor([[3.0, 1.0], [2.0, 2.0]]), log_q)
    # column 0 gains log 2, column 1 gains log 4
    expected = [[3 + math.log(2), 1 + math.log(4)], [2 + math.log(2), 2 + math.log(4)]]
    torch.testing.assert_close(corrected, torch.tensor(expected))


def test_accidental_hits_are_masked_off_the_diagonal_only():
    logits = torch.zeros(3, 3)
    masked = remove_accidental_hits(logits, torch.tensor([7, 7, 3]))
    expected = torch.zeros(3, 3)
    expected[0, 1] = expected[1, 0] = MASK_VALUE
    assert torch.equal(masked, expected)


def test_softmax_loss_targets_the_diagonal():
    # each row: -log(e^2 / (e^2 + e^0)) = log(1 + e^-2)
    loss = in_batch_softmax_loss(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2)))


def test_l2_normalize_gives_unit_rows():
    assert torch.allclose(l2_normalize(V).norm(dim=1), torch.ones(2))


def test_retrieval_loss_with_a_duplicate_item_ignores_the_duplicate():
    # rows 0 and 1 share their item; only row 2's item is a negative for them
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    loss = retrieval_loss(queries, items, torch.tensor([5, 5, 9]), None)
    # rows 0, 1: logits (2, masked, 0) -> log(1 + e^-2); row 2: (0, 0, 1) -> log(2 + e)
    by_hand = (2 * math.log(1 + math.exp(-2)) + (math.log(2 + math.e) - 1)) / 3
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)


def test_item_keys_and_sampling_log_q():
    items = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [1.0, 2.0]])
    keys = item_keys_from_vectors(items)
    assert keys[0] == keys[2] == keys[3] != keys[1]
    np.testing.assert_allclose(np.exp(sampling_log_q(keys))[keys], [0.75, 0.25, 0.75, 0.75])


def test_softmax_training_learns_to_rank(sample_files, tmp_path):
    result = train(
        sample_files["train"],
        tmp_path / "run",
        val_data=sample_files["val"],
        config=TrainConfig(epochs=3, loss="softmax", temperature=0.5),
        progress=False,
    )
    assert result.history[-1]["val_auc"] > 0.7
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_bce_refuses_softmax_only_options():
    with pytest.raises(ValueError, match="apply to loss='softmax' only"):
        TrainConfig(temperature=0.1)
