"""The stock TFX pipeline of the same shape, for the benchmark's comparison: CsvExampleGen on the
files with a header line, StatisticsGen, SchemaGen, ExampleValidator, Transform and Trainer
(`benchmarks/stock_module.py`), Evaluator (our eval config) and the stock Pusher; Beam in-memory.

    python -m benchmarks.stock_pipeline --data DIR --output_dir OUT

DIR holds `train/*.csv` and `eval/*.csv` with a header line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfx import v1 as tfx  # noqa: E402
from tfx.proto import example_gen_pb2  # noqa: E402

from pipeline.configs import BEAM_IN_MEMORY, PipelineConfig  # noqa: E402
from pipeline.dag import eval_config  # noqa: E402


def stock_pipeline(data: str, out: Path) -> tfx.dsl.Pipeline:
    split = example_gen_pb2.Input.Split
    inputs = example_gen_pb2.Input(
        splits=[split(name="train", pattern="train/*"), split(name="eval", pattern="eval/*")]
    )
    example_gen = tfx.components.CsvExampleGen(input_base=data, input_config=inputs)
    statistics = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"])
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema.outputs["schema"],
        module_file=str(Path(__file__).with_name("stock_module.py")),
    )
    trainer = tfx.components.Trainer(
        run_fn="benchmarks.stock_module.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema.outputs["schema"],
        train_args=tfx.proto.TrainArgs(),
        eval_args=tfx.proto.EvalArgs(),
    )
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        eval_config=eval_config(PipelineConfig()),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(out / "serving"))
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name="stock",
        pipeline_root=str(out / "tfx"),
        components=[
            example_gen,
            statistics,
            schema,
            validator,
            transform,
            trainer,
            evaluator,
            pusher,
        ],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(out / "metadata.sqlite")
        ),
        beam_pipeline_args=BEAM_IN_MEMORY,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    tfx.orchestration.LocalDagRunner().run(stock_pipeline(args.data, Path(args.output_dir)))


if __name__ == "__main__":
    main()
