"""create_pipeline: the DAG, top to bottom.

RecipeCsvExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate
-> Transform -> Trainer -> (latest blessed model) -> Evaluator -> TwoTowerPusher
-> ItemEmbeddings -> EmbeddingsPublisher (ANN index; Redis when a URL is configured)
-> ServingConfig (infra validation, models.config naming the served versions, pruning)
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
from components.serving_config.component import ServingConfig
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


def csv_source(config: PipelineConfig, train_data: str, val_data: str | None) -> ExamplesSource:
    """The recipe's CSV lines through RecipeCsvExampleGen."""
    input_base, input_config, output_config = example_gen_inputs(train_data, val_data)
    example_gen = RecipeCsvExampleGen(
        input_base=input_base,
        input_config=input_config,
        output_config=output_config,
        user_dim=config.user_dim,
        item_dim=config.item_dim,
    )
    return ExamplesSource(components=[example_gen], examples=example_gen.outputs["examples"])


def checked_and_transformed(config: PipelineConfig, examples) -> dict:
    """StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate, then Transform
    (after the gate: anomalies stop the run before it)."""
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
        custom_config=config.transform_config().to_custom_config(),
        materialize=False,
        disable_statistics=True,
    )
    transform.add_upstream_node(anomalies_gate)
    return dict(
        statistics_gen=statistics_gen,
        schema_gen=schema_gen,
        example_validator=example_validator,
        anomalies_gate=anomalies_gate,
        transform=transform,
    )


def trained_and_evaluated(
    config: PipelineConfig,
    examples,
    checked: dict,
    baseline_from: str = "resolver",
    trainer_factory: Callable[[dict], object] | None = None,
) -> dict:
    """Trainer (fine-tuning an imported base Model when configured), the latest blessed model
    as baseline (a Resolver, or components/latest_blessed where the backend runs no Resolver:
    open-source KFP), Evaluator. `trainer_factory(args)` builds the Trainer (kubeflow/resources.py:
    Vertex's multi-worker Trainer)."""
    nodes = {}
    trainer_args = dict(
        run_fn=RUN_FN,
        examples=examples,
        transform_graph=checked["transform"].outputs["transform_graph"],
        schema=checked["schema_gen"].outputs["schema"],
        train_args=tfx.proto.TrainArgs(),
        eval_args=tfx.proto.EvalArgs(),
        custom_config=config.trainer_config().to_custom_config(),
    )
    if config.base_model:
        nodes["base_model"] = tfx.dsl.Importer(
            source_uri=config.base_model,
            artifact_type=tfx.types.standard_artifacts.Model,
            # without it an imported Model counts as old-style and the path is not its
            # Format-Serving folder (tfx#4151)
            custom_properties={"tfx_version": tfx.__version__},
        ).with_id("base_model_importer")
        trainer_args["base_model"] = nodes["base_model"].outputs["result"]
    build_trainer = trainer_factory or (lambda args: tfx.components.Trainer(**args))
    nodes["trainer"] = trainer = build_trainer(trainer_args)
    if baseline_from == "push_records":  # open-source KFP runs no Resolver node
        nodes["model_resolver"] = LatestBlessedModel(
            trainer.outputs["model"], _local_or_remote(config.serving_dir)
        ).with_id("latest_blessed_model")
        baseline = nodes["model_resolver"].outputs["baseline"]
    else:
        nodes["model_resolver"] = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        baseline = nodes["model_resolver"].outputs["model"]
    nodes["evaluator"] = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline,
        eval_config=eval_config(config),
    )
    return nodes


def _local_or_remote(path: str) -> str:
    return os.path.abspath(path) if "://" not in path else path


def pushed_and_published(
    config: PipelineConfig, source: ExamplesSource, items: str | None, trained: dict
) -> dict:
    """TwoTowerPusher (blessed models only), ItemEmbeddings of the pushed item tower, and the
    EmbeddingsPublisher (ANN index; Redis when configured), then ServingConfig (models.config,
    infra validation, pruning)."""
    pusher = TwoTowerPusher(
        model=trained["trainer"].outputs["model"],
        model_blessing=trained["evaluator"].outputs["blessing"],
        serving_dir=_local_or_remote(config.serving_dir),
    )
    item_embeddings = ItemEmbeddings(
        pushed_model=pusher.outputs["pushed_model"],
        examples=source.examples,
        output_dir=_local_or_remote(config.output_dir),
        item_dim=config.item_dim,
        items=items,
        **({"catalogue": source.catalogue} if source.catalogue is not None else {}),
    )
    embeddings_publisher = publisher_for(
        config,
        item_embeddings.outputs["item_embeddings"],
        examples=source.examples,
        items=items,
        ann_params=json.loads(config.ann_params) if config.ann_params else None,
    )
    # what TF Serving loads is decided once the version is published (issue 20)
    serving_config = ServingConfig(
        published=embeddings_publisher.outputs["published"],
        serving_dir=_local_or_remote(config.serving_dir),
        output_dir=_local_or_remote(config.output_dir),
        base_path_prefix=config.base_path_prefix,
        keep_versions=config.keep_versions,
        redis_url=config.redis_url,
    )
    return dict(
        pusher=pusher,
        item_embeddings=item_embeddings,
        embeddings_publisher=embeddings_publisher,
        serving_config=serving_config,
    )


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
    a Resolver; `trainer_factory` builds the Trainer (Vertex's multi-worker Trainer).

    `source` replaces the CSV ExampleGen; `extend(nodes)` receives the built components by
    name (example_gen, transform, trainer, evaluator, pusher, item_embeddings,
    embeddings_publisher) and returns more components to add after them."""
    if source is None:
        source = csv_source(config, train_data, val_data)
    checked = checked_and_transformed(config, source.examples)
    trained = trained_and_evaluated(
        config, source.examples, checked, baseline_from, trainer_factory
    )
    served = pushed_and_published(config, source, items, trained)
    components = [*source.components, *checked.values(), *trained.values(), *served.values()]
    if extend is not None:
        nodes = dict(example_gen=source.components[-1], **checked, **trained, **served)
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
