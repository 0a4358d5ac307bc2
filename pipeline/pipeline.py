"""create_pipeline: the DAG, top to bottom.

RecipeCsvExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate
-> Transform -> Trainer -> (latest blessed model) -> Evaluator -> TwoTowerPusher
-> ItemEmbeddings -> EmbeddingsPublisher (ANN index; Redis when a URL is configured)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.embeddings_publisher.component import publisher_for
from components.example_gen.component import RecipeCsvExampleGen
from components.example_gen.inputs import example_gen_inputs
from components.example_gen.recipe_csv import LABEL
from components.example_gen.schema import schema_file_for
from components.item_embeddings.component import ItemEmbeddings
from components.latest_blessed.component import LatestBlessedModel
from components.pusher.component import TwoTowerPusher
from components.validation.anomalies_gate import AnomaliesGate
from pipeline.configs import PipelineConfig

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.training.run_fn"


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """AUC, accuracy and loss on the eval split; bless when AUC clears the floor and does not
    fall below the latest blessed model's by more than the tolerance."""
    auc = tfma.MetricConfig(
        class_name="AUC",
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.auc_floor}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -config.regression_tolerance},
            ),
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default", label_key=LABEL, prediction_key="probability"
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    auc,
                    tfma.MetricConfig(class_name="BinaryAccuracy"),
                    tfma.MetricConfig(class_name="BinaryCrossentropy"),
                    tfma.MetricConfig(class_name="ExampleCount"),
                ]
            )
        ],
    )


@dataclasses.dataclass
class ExamplesSource:
    """Where the Examples come from when it is not the recipe's CSV: the components that make
    them (e.g. Item2Vec -> SampleGen), their `examples` channel (train/eval splits of the
    recipe's features) and, optionally, a channel of the item catalogue to embed."""

    components: list
    examples: object
    catalogue: object | None = None


def create_pipeline(
    config: PipelineConfig,
    train_data: str | None,
    val_data: str | None,
    items: str | None,
    local_metadata: bool = True,
    *,
    source: ExamplesSource | None = None,
    extend: Callable[[dict], list] | None = None,
    baseline_from: str = "resolver",
    trainer_factory: Callable[[dict], object] | None = None,
):
    """The DAG. `local_metadata=False` leaves ML Metadata to the orchestrator (Kubeflow/Vertex),
    so that compiling touches no file of the pipeline root. `baseline_from="push_records"`
    finds the Evaluator's baseline with components/latest_blessed (open-source KFP) instead of
    a Resolver.

    `source` replaces the CSV ExampleGen; `extend(nodes)` receives the built components by
    name (example_gen, transform, trainer, evaluator, pusher, item_embeddings) and returns
    more components to add after them."""
    if source is None:
        input_base, input_config, output_config = example_gen_inputs(train_data, val_data)
        example_gen = RecipeCsvExampleGen(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            user_dim=config.user_dim,
            item_dim=config.item_dim,
        )
        source = ExamplesSource(components=[example_gen], examples=example_gen.outputs["examples"])
    examples = source.examples
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=str(schema_file_for(config.user_dim, config.item_dim, config.output_dir))
    )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"normalize": config.normalize},
        materialize=False,
        disable_statistics=True,
    )
    transform.add_upstream_node(anomalies_gate)

    trainer_args = dict(
        run_fn=RUN_FN,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(),
        eval_args=tfx.proto.EvalArgs(),
        custom_config=config.trainer_config(),
    )
    components = [
        *source.components,
        statistics_gen,
        schema_gen,
        example_validator,
        anomalies_gate,
        transform,
    ]
    if config.base_model:
        base_model = tfx.dsl.Importer(
            source_uri=config.base_model,
            artifact_type=tfx.types.standard_artifacts.Model,
            # without it an imported Model counts as old-style and the path is not its
            # Format-Serving folder (tfx#4151)
            custom_properties={"tfx_version": tfx.__version__},
        ).with_id("base_model_importer")
        trainer_args["base_model"] = base_model.outputs["result"]
        components.append(base_model)
    # kubeflow/resources.py: Vertex's multi-worker Trainer
    trainer = (trainer_factory or (lambda args: tfx.components.Trainer(**args)))(trainer_args)

    serving_dir = (
        os.path.abspath(config.serving_dir)
        if "://" not in config.serving_dir
        else config.serving_dir
    )
    if baseline_from == "push_records":  # open-source KFP runs no Resolver node
        model_resolver = LatestBlessedModel(trainer.outputs["model"], serving_dir)
        model_resolver, baseline = model_resolver.with_id("latest_blessed_model"), "baseline"
    else:
        baseline = "model"
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs[baseline],
        eval_config=eval_config(config),
    )
    pusher = TwoTowerPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_dir=serving_dir,
        base_path_prefix=config.base_path_prefix,
        keep_versions=config.keep_versions,
    )
    item_embeddings = ItemEmbeddings(
        pushed_model=pusher.outputs["pushed_model"],
        examples=examples,
        output_dir=os.path.abspath(config.output_dir)
        if "://" not in config.output_dir
        else config.output_dir,
        item_dim=config.item_dim,
        items=items,
        **({"catalogue": source.catalogue} if source.catalogue is not None else {}),
    )
    embeddings_publisher = publisher_for(
        config,
        item_embeddings.outputs["item_embeddings"],
        examples=examples,
        items=items,
        ann_params=json.loads(config.ann_params) if config.ann_params else None,
    )
    components += [
        trainer,
        model_resolver,
        evaluator,
        pusher,
        item_embeddings,
        embeddings_publisher,
    ]
    if extend is not None:
        nodes = dict(
            example_gen=source.components[-1],
            transform=transform,
            trainer=trainer,
            evaluator=evaluator,
            pusher=pusher,
            item_embeddings=item_embeddings,
            embeddings_publisher=embeddings_publisher,
        )
        components += extend(nodes)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        )
        if local_metadata
        else None,
        beam_pipeline_args=config.beam_pipeline_args,
    )
