"""Run the pipeline on TFX's LocalDagRunner (SQLite ML Metadata).

    python -m pipeline.local_runner --train_data=PATH --val_data=PATH [--items=PATH] \
        --output_dir=DIR
    python -m pipeline.local_runner --output_dir=DIR      # the embedded synthetic data set

Prints one line per component as it finishes and a summary; TensorFlow, absl and Beam logs go
to `DIR/logs/run-<time>.log` (also to the console with `--verbose`).

Also the `tfx` CLI's pipeline file (`tfx pipeline create --engine local --pipeline_path
pipeline/local_runner.py`): the CLI runs it as a script, and the `pipeline` package comes from
the installed checkout (install.sh installs it editable); configuration then comes from
pipeline/configs.py and FINETOWER_* environment variables.
"""

from __future__ import annotations

import os

# TFMA recognises Keras 2 models only so; set where the process starts, before TensorFlow loads
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from components.example_gen.inputs import spans_of  # noqa: E402
from pipeline import beam_profiles, configs, run_output  # noqa: E402
from pipeline.demo_data import ensure_demo_data  # noqa: E402
from pipeline.run_summary import data_error_in, push_state_after_failure, summarize  # noqa: E402


def resolve_data(config: configs.PipelineConfig) -> tuple[str, str | None, str | None]:
    """(train, eval, items) paths; the embedded default's files when no train data is given."""
    if config.train_data:
        return config.train_data, config.val_data, config.items
    demo = ensure_demo_data(os.path.join(config.output_dir, "demo_data"))
    return str(demo["train"]), str(demo["eval"]), config.items or str(demo["items"])


def build(config: configs.PipelineConfig):
    from pipeline.dag import create_pipeline  # TFX and TensorFlow load here, logs redirected

    train, val, items = resolve_data(config)
    return create_pipeline(config, train, val, items, baseline_from="served")


def parse_flags(argv: list[str] | None = None) -> tuple[configs.PipelineConfig, bool]:
    """(configuration, verbose) from the flags over FINETOWER_* variables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_data", help="recipe CSV file or glob (default: synthetic demo)")
    parser.add_argument("--val_data", help="recipe CSV for the eval split (default: 80/20 hash)")
    parser.add_argument("--items", help="item catalogue: CSV item_id,v.. or word2vec text")
    parser.add_argument(
        "--span", type=int, help="ingest this span ({SPAN} patterns; default newest)"
    )
    parser.add_argument("--span_range", help="A:B: one run per span A..B, in order (a backfill)")
    parser.add_argument("--window_spans", type=int, help="Transform/Trainer see the last N spans")
    parser.add_argument("--output_dir")
    parser.add_argument("--metadata_path", dest="metadata_file", help="ML Metadata SQLite file")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--normalize", choices=["zscore", "l2", "none"])
    parser.add_argument("--base_model", help="a Model folder to fine-tune from")
    parser.add_argument(
        "--warm_start",
        choices=["served", "none"],
        help="served (default): start from the served model when there is one",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--accept_drift",
        action="store_true",
        default=None,
        help="train on a span that drifted past the thresholds (recorded either way)",
    )
    parser.add_argument("--user_dim", type=int)
    parser.add_argument("--item_dim", type=int)
    parser.add_argument("--auc_floor", type=float)
    parser.add_argument("--base_path_prefix", help="base path of the towers in models.config")
    parser.add_argument("--keep_versions", type=int, help="tower versions kept (0: all)")
    parser.add_argument(
        "--beam_profile",
        choices=beam_profiles.PROFILES,
        help="in_memory (default), multi_processing, dataflow, flink, spark; options from "
        "FINETOWER_BEAM_<OPTION>, e.g. FINETOWER_BEAM_WORKERS",
    )
    parser.add_argument("--train_in_memory_mb", type=int, help="train from memory up to this")
    parser.add_argument(
        "--steps_per_execution", type=int, help="batches per call into TensorFlow (one device)"
    )
    parser.add_argument("--distribution", choices=["one_device", "mirrored", "multi_worker"])
    parser.add_argument("--redis_url", help="publish item embeddings to this Redis")
    parser.add_argument("--ann_backend", choices=["flat", "hnsw", "ivf", "annoy"])
    parser.add_argument("--ann_params", help='index parameters as JSON, e.g. {"nprobe": 96}')
    parser.add_argument(
        "--serving_log",
        help="a folder of user vectors the recall service logged (its --serving_log): adds "
        "SkewCheck, which records their skew from the new span's (not a gate)",
    )
    parser.add_argument(
        "--simulate_days",
        type=int,
        help="a synthetic span a day, the pipeline after each, a table (pipeline/simulation.py)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="TensorFlow/absl/Beam logs on the console too"
    )
    args = vars(parser.parse_args(argv))
    profile = args.pop("beam_profile")
    verbose = args.pop("verbose")
    config = configs.from_environment(**args)
    beam = beam_profiles.beam_args_from_environment(profile=profile)
    if beam is not None:
        config.beam_pipeline_args = beam
    # absolute: artifact URIs in ML Metadata must not depend on the working directory
    if "://" not in config.output_dir:
        config.output_dir = os.path.abspath(config.output_dir)
    elif config.metadata_file is None:
        parser.error("a remote --output_dir needs --metadata_path (a local SQLite file)")
    try:
        spans_of(config.span, config.span_range)
    except ValueError as error:
        parser.error(str(error))
    if config.serving_log:  # the recall service writes local files
        if "://" in config.serving_log:
            parser.error(f"--serving_log: a local folder, not {config.serving_log}")
        config.serving_log = os.path.abspath(config.serving_log)
    if config.window_spans < 1:
        parser.error(f"--window_spans: at least 1, got {config.window_spans}")
    if config.distribution == "multi_worker":  # one process: no workers, no TF_CONFIG
        parser.error("--distribution multi_worker runs on Vertex only (kubeflow.runner)")
    return config, verbose


def parse_args(argv: list[str] | None = None) -> configs.PipelineConfig:
    return parse_flags(argv)[0]


def run(config: configs.PipelineConfig, console: run_output.RunConsole) -> int:
    """Run the DAG with a progress line per component; the summary, or the failure, on the
    console. Returns the exit status."""
    from tfx import v1 as tfx

    run_output.quiet_logging(
        console,
        lambda node_id: run_output.node_state_and_figure(
            config.metadata_path, config.pipeline_name, node_id
        ),
    )
    started = time.time()
    try:
        tfx.orchestration.LocalDagRunner().run(build(config))
    except Exception as error:  # noqa: BLE001 (the runner's top level: say what failed, exit 1)
        found = data_error_in(error)
        print(f"\nfinetower: run failed: {found or error}", file=console.err)
        print(push_state_after_failure(config), file=console.err)
        print(f"finetower: the full log is {console.path}", file=console.err)
        return 1
    print(summarize(config, started), file=console.out)
    return 0


def run_spans(config: configs.PipelineConfig, console: run_output.RunConsole) -> int:
    """One run, or one run per span of `--span_range` (in order; stops at the first failure)."""
    spans = spans_of(config.span, config.span_range) if config.span_range else None
    if spans is None:
        return run(config, console)
    for span in spans:
        print(f"finetower: span {span}", file=console.out)
        status = run(dataclasses.replace(config, span=span, span_range=None), console)
        if status:
            return status
    return 0


def main(argv: list[str] | None = None) -> int:
    config, verbose = parse_flags(argv)
    path = run_output.log_path(config.output_dir)
    print(f"finetower: logs in {path}" + (" (and here)" if verbose else ""), flush=True)
    with run_output.RunConsole(path, verbose=verbose) as console:
        if config.simulate_days:
            from pipeline.simulation import simulate

            return simulate(config, config.simulate_days, console, run)
        return run_spans(config, console)


if __name__ == "__main__":
    sys.exit(main())
