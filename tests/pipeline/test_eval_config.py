"""The Evaluator's configuration: the blessing's AUC thresholds and only the metrics read."""

from __future__ import annotations

from pipeline import configs
from pipeline.dag import eval_config


def test_the_evaluator_computes_the_metrics_read_and_not_the_models_compiled_duplicates():
    config = eval_config(configs.PipelineConfig(auc_floor=0.7, regression_tolerance=0.02))
    # TFMA's defaults would run the model's compiled loss/accuracy/AUC again, per batch
    assert config.options.HasField("include_default_metrics")
    assert config.options.include_default_metrics.value is False
    metrics = {m.class_name: m for spec in config.metrics_specs for m in spec.metrics}
    # what pipeline/run_summary.py reads (auc, binary_accuracy, binary_crossentropy)
    assert set(metrics) == {"AUC", "AccuracyAndCrossEntropy", "ExampleCount"}
    threshold = metrics["AUC"].threshold
    assert threshold.value_threshold.lower_bound.value == 0.7
    assert threshold.change_threshold.absolute.value == -0.02
