"""Accuracy and cross-entropy for the Evaluator in one pass over the examples.

TFMA calls every metric's combiner once per example, in Python: its BinaryAccuracy (a
confusion matrix at 0.5) and a wrapped Keras BinaryCrossentropy cost about 0.4 ms an example
each, more than the model's own inference; on 1.58M eval lines that is minutes. This metric
reads each example's label and prediction once and keeps three sums. It writes the keys TFMA's
own metrics write (`binary_accuracy`, `binary_crossentropy`), with Keras' definitions: a
prediction above 0.5 is a positive; log loss of predictions clipped to [1e-7, 1 - 1e-7], with
1e-7 added inside each log (tf_keras.backend.binary_crossentropy).
AUC, which the blessing gates on, stays TFMA's own.
"""

from __future__ import annotations

import math

import apache_beam as beam
from tensorflow_model_analysis.metrics import metric_types, metric_util

ACCURACY = "binary_accuracy"
CROSS_ENTROPY = "binary_crossentropy"
THRESHOLD = 0.5
EPSILON = 1e-7  # Keras' backend epsilon


class AccuracyAndCrossEntropy(metric_types.Metric):
    """`binary_accuracy` and `binary_crossentropy` of a binary classifier, in one combiner."""

    def __init__(self, name: str = "accuracy_and_cross_entropy"):
        super().__init__(metric_util.merge_per_key_computations(_computations), name=name)


def _computations(
    name=None,
    eval_config=None,
    model_name="",
    output_name="",
    sub_key=None,
    aggregation_type=None,
    class_weights=None,
    example_weighted=False,
    **_,
) -> metric_types.MetricComputations:
    keys = [
        metric_types.MetricKey(
            name=metric,
            model_name=model_name,
            output_name=output_name,
            sub_key=sub_key,
            example_weighted=example_weighted,
        )
        for metric in (ACCURACY, CROSS_ENTROPY)
    ]
    combiner = _Combiner(keys, eval_config, aggregation_type, class_weights, example_weighted)
    return [metric_types.MetricComputation(keys=keys, preprocessors=None, combiner=combiner)]


class _Combiner(beam.CombineFn):
    """Accumulates [weight, weighted correct, weighted log loss]."""

    def __init__(self, keys, eval_config, aggregation_type, class_weights, example_weighted):
        self._keys = keys
        self._eval_config = eval_config
        self._aggregation_type = aggregation_type
        self._class_weights = class_weights
        self._example_weighted = example_weighted

    def create_accumulator(self) -> list[float]:
        return [0.0, 0.0, 0.0]

    def add_input(self, accumulator: list[float], element) -> list[float]:
        key = self._keys[0]
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=key.model_name,
            output_name=key.output_name,
            sub_key=key.sub_key,
            aggregation_type=self._aggregation_type,
            class_weights=self._class_weights,
            example_weighted=self._example_weighted,
        ):
            y = float(metric_util.safe_to_scalar(label))
            p = float(metric_util.safe_to_scalar(prediction))
            w = float(metric_util.safe_to_scalar(weight))
            clipped = min(max(p, EPSILON), 1.0 - EPSILON)
            accumulator[0] += w
            accumulator[1] += w * ((p > THRESHOLD) == (y > THRESHOLD))
            accumulator[2] -= w * (
                y * math.log(clipped + EPSILON) + (1.0 - y) * math.log(1.0 - clipped + EPSILON)
            )
        return accumulator

    def merge_accumulators(self, accumulators) -> list[float]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for i in range(3):
                merged[i] += accumulator[i]
        return merged

    def extract_output(self, accumulator: list[float]) -> dict:
        weight, correct, loss = accumulator
        if weight <= 0:
            return {key: float("nan") for key in self._keys}
        return {self._keys[0]: correct / weight, self._keys[1]: loss / weight}
