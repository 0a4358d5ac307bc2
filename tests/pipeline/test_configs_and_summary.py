"""Configuration from flags and environment; the runner's error and summary lines."""

from __future__ import annotations

import apache_beam as beam
import pytest

from components.common.errors import DataError
from pipeline import configs
from pipeline.configs import BEAM_IN_MEMORY
from pipeline.dag import example_gen_inputs
from pipeline.local_runner import parse_args
from pipeline.run_summary import data_error_in, latest_run_artifacts, summarize


def test_defaults_are_the_recipe():
    config = configs.PipelineConfig()
    assert config.trainer_config().to_custom_config() == {
        "epochs": 2,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "patience": 10,
        "seed": 0,
        "user_dim": 128,
        "item_dim": 128,
        "normalize": "zscore",
        "distribution": "one_device",
        "train_in_memory_mb": 256,
        "steps_per_execution": 64,
    }


def test_trainer_config_goes_into_custom_config_and_comes_back_typed():
    config = configs.PipelineConfig(epochs=5, batch_size=64, distribution="mirrored")
    trainer = config.trainer_config()
    assert configs.TrainerConfig.from_custom_config(trainer.to_custom_config()) == trainer
    # ML Metadata's JSON may hand numbers back as floats; fields left out keep the defaults
    back = configs.TrainerConfig.from_custom_config({"epochs": 3.0, "batch_size": 32.0})
    assert (back.epochs, back.batch_size, back.patience) == (3, 32, 10)
    assert isinstance(back.epochs, int) and isinstance(back.batch_size, int)
    assert not back.distribution or back.single_device
    assert not configs.TrainerConfig.from_custom_config(trainer.to_custom_config()).single_device
    with pytest.raises(configs.ConfigError, match="unknown custom_config field.* batchsize"):
        configs.TrainerConfig.from_custom_config({"batchsize": 64})
    with pytest.raises(configs.ConfigError, match="steps_per_execution must be >= 1, got 0"):
        configs.TrainerConfig.from_custom_config({"steps_per_execution": 0})
    assert configs.TransformConfig.from_custom_config(None).normalize == "zscore"
    assert config.transform_config().to_custom_config() == {"normalize": "zscore"}
    # one default, in one place: the pipeline's knobs start from the Trainer's
    assert configs.PipelineConfig().trainer_config() == configs.TrainerConfig()


def test_environment_then_flags():
    env = {
        "FINETOWER_EPOCHS": "5",
        "FINETOWER_OUTPUT_DIR": "/x",
        "FINETOWER_LEARNING_RATE": "0.01",
        "FINETOWER_BEAM_PIPELINE_ARGS": "--runner=DirectRunner --direct_num_workers=2",
    }
    config = configs.from_environment(env, epochs=None, batch_size=64)
    assert (config.epochs, config.batch_size, config.learning_rate) == (5, 64, 0.01)
    assert config.output_dir == "/x" and config.serving_dir == "/x/serving"
    assert config.beam_pipeline_args == ["--runner=DirectRunner", "--direct_num_workers=2"]
    flags = parse_args(["--epochs", "3", "--normalize", "l2", "--output_dir", "/y"])
    assert (flags.epochs, flags.normalize, flags.output_dir) == (3, "l2", "/y")


def test_named_splits_or_a_hash_split(tmp_path):
    base, inputs, outputs = example_gen_inputs(
        str(tmp_path / "a/train.csv"), str(tmp_path / "b/v.csv")
    )
    assert base == str(tmp_path)
    assert [(s.name, s.pattern) for s in inputs.splits] == [
        ("train", "a/train.csv"),
        ("eval", "b/v.csv"),
    ]
    assert not outputs.split_config.splits
    base, inputs, outputs = example_gen_inputs(str(tmp_path / "all/*.csv"), None)
    assert base == str(tmp_path / "all") and inputs.splits[0].pattern == "*.csv"
    assert [(s.name, s.hash_buckets) for s in outputs.split_config.splits] == [
        ("train", 4),
        ("eval", 1),
    ]


def test_data_error_found_however_beam_wraps_it():
    def fail(_):
        raise DataError("'x' is not a number", "t.csv", 7, 3)

    with pytest.raises(Exception) as caught, beam.Pipeline(argv=BEAM_IN_MEMORY) as pipeline:
        _ = pipeline | beam.Create([1]) | beam.Map(fail)
    assert data_error_in(caught.value) == "t.csv, line 7, field 3: 'x' is not a number"
    wrapped = RuntimeError(
        "Traceback ...\ncomponents.common.errors.DataError: f.csv, line 2, field 1: "
        "label '3' is not 0 or 1 [while running 'Map']\n"
    )
    assert data_error_in(wrapped) == "f.csv, line 2, field 1: label '3' is not 0 or 1"
    assert data_error_in(ValueError("something else")) is None


def test_summary_without_a_run_says_built_not_run(tmp_path):
    config = configs.PipelineConfig(output_dir=str(tmp_path))
    assert latest_run_artifacts(config.metadata_path) == {}
    assert summarize(config, started=0.0) == "finetower: pipeline 'finetower' built (not run)"
