"""RecipeCsvExampleGen: FileBasedExampleGen for the recipe's headerless CSV.

It keeps FileBasedExampleGen's driver (spans, input fingerprints, hence TFX's cache) and its
input/output split configs, adds the vector sizes, and runs our executor.
"""

from __future__ import annotations

from tfx import types
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.common.vectors import VECTOR_DIM
from components.example_gen import executor
from components.example_gen.config import ITEM_DIM_KEY, USER_DIM_KEY


class RecipeCsvExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        USER_DIM_KEY: ExecutionParameter(type=int),
        ITEM_DIM_KEY: ExecutionParameter(type=int),
    }


class RecipeCsvExampleGen(FileBasedExampleGen):
    """Examples (`label`, `user_vector`, `item_vector`, `item_id`) from `label,u..,i..` lines."""

    SPEC_CLASS = RecipeCsvExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input,
        output_config: example_gen_pb2.Output | None = None,
        range_config: range_config_pb2.RangeConfig | None = None,
        *,
        user_dim: int = VECTOR_DIM,
        item_dim: int = VECTOR_DIM,
    ):
        spec = RecipeCsvExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config or example_gen_pb2.Output(),
            # the span this run ingests (None: the driver's newest span of `{SPAN}` patterns)
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            # uncompressed `.tfrecord` (TFX has no value for it; readers detect compression
            # from the file suffix), not FORMAT_TFRECORDS_GZIP
            output_file_format=example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
            user_dim=user_dim,
            item_dim=item_dim,
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
