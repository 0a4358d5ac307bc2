"""The Evaluator's one-pass accuracy and cross-entropy against Keras' own definitions."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras
from tensorflow_model_analysis.metrics import metric_types

from components.trainer.eval_metrics import ACCURACY, CROSS_ENTROPY, AccuracyAndCrossEntropy


def _combined(labels, predictions, parts: int = 3) -> dict:
    (computation,) = AccuracyAndCrossEntropy().computations()
    combiner = computation.combiner
    accumulators = []
    for chunk in np.array_split(np.arange(len(labels)), parts):  # as Beam splits and merges
        accumulator = combiner.create_accumulator()
        for i in chunk:
            element = metric_types.StandardMetricInputs(
                labels=np.array([labels[i]]),
                predictions=np.array([predictions[i]]),
                example_weights=np.array([1.0]),
            )
            accumulator = combiner.add_input(accumulator, element)
        accumulators.append(accumulator)
    out = combiner.extract_output(combiner.merge_accumulators(accumulators))
    return {key.name: value for key, value in out.items()}


def test_accuracy_and_cross_entropy_equal_keras_on_the_same_predictions():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000).astype(np.float32)
    predictions = np.clip(rng.random(2000).astype(np.float32), 0, 1)
    predictions[:5] = [0.0, 1.0, 0.5, 1e-9, 1 - 1e-9]  # edges: clipping and the threshold
    got = _combined(labels, predictions)
    accuracy = keras.metrics.BinaryAccuracy()
    accuracy.update_state(labels[:, None], predictions[:, None])
    loss = keras.metrics.BinaryCrossentropy()
    loss.update_state(labels[:, None], predictions[:, None])
    assert got[ACCURACY] == pytest.approx(float(accuracy.result()), abs=1e-6)
    assert got[CROSS_ENTROPY] == pytest.approx(float(loss.result()), rel=1e-4)


def test_no_examples_is_nan_not_zero():
    (computation,) = AccuracyAndCrossEntropy().computations()
    out = computation.combiner.extract_output(computation.combiner.create_accumulator())
    assert all(np.isnan(v) for v in out.values())
