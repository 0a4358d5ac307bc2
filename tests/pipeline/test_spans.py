"""Spans: `{SPAN}` / `{YYYY}{MM}{DD}` patterns through FileBasedExampleGen's driver, `--span`,
and the rolling window resolved in ML Metadata (components/example_gen/inputs.py,
pipeline/dag.py rolling_window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.example_gen.inputs import example_gen_inputs, spans_of, split_inputs
from pipeline.configs import PipelineConfig
from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv

DIM = 8


def never_a_dir(_: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("train", "eval_", "base", "train_pattern", "eval_pattern"),
    [
        ("/d/span-{SPAN}/train*.csv", "/d/span-{SPAN}/eval.csv",
         "/d", "span-{SPAN}/train*.csv", "span-{SPAN}/eval.csv"),
        ("gs://b/logs/{YYYY}{MM}{DD}/train.csv", "gs://b/logs/{YYYY}{MM}{DD}/eval.csv",
         "gs://b/logs", "{YYYY}{MM}{DD}/train.csv", "{YYYY}{MM}{DD}/eval.csv"),
        ("/d/span-{SPAN}/", None, "/d", "span-{SPAN}/*", None),
    ],
)  # fmt: skip
def test_span_placeholders_stay_in_the_pattern(train, eval_, base, train_pattern, eval_pattern):
    found = split_inputs(train, eval_, is_dir=never_a_dir)
    assert found.input_base == base
    assert found.patterns[0][1] == train_pattern
    if eval_pattern:
        assert found.patterns[1][1] == eval_pattern


@pytest.mark.parametrize(
    ("span", "span_range", "spans"),
    [(None, None, None), (3, None, [3]), (None, "2:4", [2, 3, 4]), (None, "5:5", [5])],
)
def test_spans_of(span, span_range, spans):
    assert spans_of(span, span_range) == spans


@pytest.mark.parametrize(
    ("span", "span_range", "message"),
    [(1, "1:2", "not both"), (None, "3:1", "A <= B"), (None, "x", "A:B"), (-1, None, ">= 0")],
)
def test_bad_span_flags_are_refused_by_name(span, span_range, message):
    with pytest.raises(ValueError, match=message):
        spans_of(span, span_range)


def write_span(root: Path, span: int, rows: int = 400, shift: float = 0.0) -> Path:
    labels, users, items, _ = demo_samples(
        DemoData(rows=rows, items=50, user_dim=DIM, item_dim=DIM, seed=span)
    )
    cut = int(rows * 0.8)
    folder = root / f"span-{span}"
    write_recipe_csv(folder / "train.csv", labels[:cut], users[:cut] + shift, items[:cut])
    write_recipe_csv(folder / "eval.csv", labels[cut:], users[cut:] + shift, items[cut:])
    return folder


def window_reader_class():
    """A consumer of a list of Examples (StatisticsGen takes one): what the window resolved to
    is read back from its input events in ML Metadata."""
    from tfx.dsl.components.base import base_component, base_executor, executor_spec
    from tfx.types import component_spec, standard_artifacts

    class Spec(component_spec.ComponentSpec):
        PARAMETERS = {}
        INPUTS = {"examples": component_spec.ChannelParameter(type=standard_artifacts.Examples)}
        OUTPUTS = {}

    class Reader(base_component.BaseComponent):
        SPEC_CLASS = Spec
        EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(base_executor.EmptyExecutor)

        def __init__(self, examples):
            super().__init__(spec=Spec(examples=examples))

    return Reader


def WindowReader(examples):  # noqa: N802 (a component's constructor)
    return window_reader_class()(examples)


def ingest_and_window(tmp_path: Path, data: Path, window: int, span: int | None = None):
    """ExampleGen (the real component, its driver) and StatisticsGen over the rolling window;
    returns the (ExampleGen spans, window spans) this run saw, from ML Metadata."""
    from tfx import v1 as tfx

    from pipeline.dag import csv_source, rolling_window

    config = PipelineConfig(
        output_dir=str(tmp_path / "out"), user_dim=DIM, item_dim=DIM, window_spans=window, span=span
    )
    source = csv_source(
        config, str(data / "span-{SPAN}" / "train.csv"), str(data / "span-{SPAN}" / "eval.csv")
    )
    example_gen = source.components[0]
    window_channel = rolling_window(config, example_gen, source.examples)
    statistics = WindowReader(examples=window_channel).with_id("window_stats")
    statistics.add_upstream_node(example_gen)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="spans",
        pipeline_root=config.pipeline_root,
        components=[example_gen, statistics],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
        beam_pipeline_args=config.beam_pipeline_args,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return last_execution_spans(config.metadata_path, example_gen.id, "window_stats")


def last_execution_spans(
    metadata_path: str, example_gen_id: str, consumer_id: str, pipeline_name: str = "spans"
):
    """(spans ExampleGen's latest execution wrote, spans the consumer's latest execution read)
    and whether ExampleGen's latest execution was a cache hit."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))

    def latest(node_id: str):
        context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
        return max(store.get_executions_by_context(context.id), key=lambda e: e.id)

    def spans(execution, kind) -> list[int]:
        ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
               if e.type == kind and e.path.steps[0].key == "examples"]  # fmt: skip
        return sorted(a.properties["span"].int_value for a in store.get_artifacts_by_id(ids))

    gen = latest(example_gen_id)
    cached = gen.last_known_state == metadata_store_pb2.Execution.CACHED
    written = spans(gen, metadata_store_pb2.Event.OUTPUT) if not cached else []
    return written, spans(latest(consumer_id), metadata_store_pb2.Event.INPUT), cached


def test_each_run_ingests_the_newest_span_and_the_window_comes_from_metadata(tmp_path):
    data = tmp_path / "data"
    write_span(data, 1)
    assert ingest_and_window(tmp_path, data, window=2) == ([1], [1], False)
    write_span(data, 2)
    assert ingest_and_window(tmp_path, data, window=2) == ([2], [1, 2], False)
    write_span(data, 3)
    # the window is the last two spans ingested; span 1 is not read again
    assert ingest_and_window(tmp_path, data, window=2) == ([3], [2, 3], False)
    # nothing new: the newest span's ingestion is a cache hit, the window unchanged
    assert ingest_and_window(tmp_path, data, window=2)[1:] == ([2, 3], True)


def test_span_flag_ingests_that_span(tmp_path):
    data = tmp_path / "data"
    for span in (1, 2):
        write_span(data, span)
    written, window, _ = ingest_and_window(tmp_path, data, window=1, span=1)
    assert (written, window) == ([1], [1])


def test_single_file_layout_is_span_zero(tmp_path):
    base, inputs, _ = example_gen_inputs(str(tmp_path / "train.csv"), str(tmp_path / "eval.csv"))
    assert base == str(tmp_path)
    assert [s.pattern for s in inputs.splits] == ["train.csv", "eval.csv"]
    assert np.all([not s.pattern.count("{") for s in inputs.splits])
