"""ExampleGen executor for the recipe's CSV: parse, check and encode each file, write TFRecords.

The unit of parallelism is a file (line numbers in errors are exact): Beam hands each file to
a worker, which streams it in chunks and writes its own TFRecord shard(s). There is no
reshuffle (the stock writer's reshuffle holds the whole split in memory on the local runner;
the Trainer shuffles anyway), and shards are uncompressed (these floats gzip by ~13% at
~26 MB/s a core); TFX's readers detect compression by file name.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.common.errors import DataError
from components.example_gen import recipe_csv
from components.example_gen.config import vector_sizes

SHARD_SUFFIX = ".tfrecord"


def matched_files(input_base: str, pattern: str) -> list[str]:
    """The files a split's pattern matches under `input_base`, sorted; DataError if none."""
    files = sorted(tf.io.gfile.glob(os.path.join(input_base, pattern)))
    if not files:
        raise DataError(f"no input file matches {pattern!r}", input_base)
    return files


class _WriteShards(beam.DoFn):
    """(file index, path) -> one TFRecord shard per output split; yields (split, rows)."""

    def __init__(self, split_uris: list[str], buckets: list[int], user_dim: int, item_dim: int):
        self._split_uris = split_uris
        self._buckets = buckets  # cumulative hash buckets; [] for "one input split, no hashing"
        self._dims = (user_dim, item_dim)

    def process(self, element: tuple[int, str]):
        index, path = element
        paths = [os.path.join(uri, f"data-{index:05d}{SHARD_SUFFIX}") for uri in self._split_uris]
        writers = [tf.io.TFRecordWriter(p) for p in paths]
        rows = [0] * len(writers)
        try:
            for chunk in recipe_csv.iter_recipe_chunks(path, *self._dims):
                if not self._buckets:
                    parts = [chunk]
                else:
                    bucket = recipe_csv.hash_buckets(chunk, self._buckets[-1])
                    split_of = sum((bucket >= b).astype(int) for b in self._buckets[:-1])
                    parts = [chunk.take(split_of == s) for s in range(len(writers))]
                for s, part in enumerate(parts):
                    for record in recipe_csv.encode_examples(part) if len(part) else ():
                        writers[s].write(record)
                    rows[s] += len(part)
        finally:
            for writer in writers:
                writer.close()
        yield from zip(self._split_uris, rows, strict=True)


def record_span(artifact, exec_properties: dict[str, Any]) -> None:
    """The span (and version) the driver resolved, as the Examples' own properties: the driver
    records them as custom properties only, and TFX's span resolvers (rolling_range, ...) read
    the properties (a span missing there reads as 0: every span would look the same)."""
    span = exec_properties.get(utils.SPAN_PROPERTY_NAME)
    if span is not None:
        artifact.span = int(span)
    version = exec_properties.get(utils.VERSION_PROPERTY_NAME)
    if version is not None:
        artifact.version = int(version)


class Executor(BaseExampleGenExecutor):
    """Writes `Split-<name>/data-<file>.tfrecord` for each split of the recipe's CSV files."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("the recipe's ExampleGen writes its shards itself (Do)")

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config
        )
        user_dim, item_dim = vector_sizes(exec_properties)
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        split_names = utils.generate_output_split_names(input_config, output_config)
        artifact_utils.get_single_instance(
            examples
        ).split_names = artifact_utils.encode_split_names(split_names)
        split_uris = [artifact_utils.get_split_uri(examples, name) for name in split_names]
        for uri in split_uris:
            tf.io.gfile.makedirs(uri)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]

        if output_config.split_config.splits:  # one input, hash-split into the output splits
            buckets = list(
                itertools.accumulate(s.hash_buckets for s in output_config.split_config.splits)
            )
            jobs = [(split_uris, buckets, input_config.splits[0].pattern)]
        else:
            jobs = [
                ([uri], [], split.pattern)
                for uri, split in zip(split_uris, input_config.splits, strict=True)
            ]
        # every file is matched (and a missing one reported) before anything runs
        jobs = [(uris, b, matched_files(input_base, p)) for uris, b, p in jobs]

        for artifact in examples:
            examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
            record_span(artifact, exec_properties)
        with self._make_beam_pipeline() as pipeline:
            for n, (uris, buckets, files) in enumerate(jobs):
                _ = (
                    pipeline
                    | f"Files[{n}]" >> beam.Create(list(enumerate(files)))
                    | f"ParseWrite[{n}]"
                    >> beam.ParDo(_WriteShards(uris, buckets, user_dim, item_dim))
                )
