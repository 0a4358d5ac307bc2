"""create_pipeline: the DAG, top to bottom.

RecipeCsvExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate
-> Transform -> Trainer -> (latest blessed model) -> Evaluator -> TwoTowerPusher
-> ItemEmbeddings -> EmbeddingsPublisher (ANN index; Redis when a URL is configured)
-> ServingConfig (infra validation, models.config naming the served versions, pruning)

With a serving log (`serving_log`), SkewCheck compares the user vectors the recall service
logged with the new span's (it records, it does not gate: components/validation/skew.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from google.protobuf.wrappers_pb2 import BoolValue
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx

from components.common.paths import absolute
from components.embeddings_publisher.component import publisher_for
from components.example_gen.component import RecipeCsvExampleGen
from components.example_gen.inputs import (
    estimated_lines,
    example_gen_inputs,
    has_span_placeholder,
    range_config,
)
from components.example_gen.recipe_csv import LABEL
from components.example_gen.schema import schema_file_for
from components.item_embeddings.component import ItemEmbeddings
from components.latest_blessed.component import LatestBlessedModel, ServedModel
from components.pusher.component import TwoTowerPusher
from components.served_model.strategy import served_model_resolver
from components.serving_config.component import ServingConfig
from components.validation.anomalies_gate import AnomaliesGate
from components.validation.drift import DriftCheck, DriftGate
from components.validation.skew import skew_check_for
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
        # the metrics below are every one the blessing and the run's summary read; TFMA's
        # defaults would add the model's compiled metrics (loss, accuracy, AUC again), each
        # one a Keras metric run per batch: a third of the Evaluator's time, for duplicates
        options=config_pb2.Options(include_default_metrics=BoolValue(value=False)),
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    auc,
                    # binary_accuracy and binary_crossentropy in one pass (TFMA's two cost
                    # more than the model's inference: components/trainer/eval_metrics.py)
                    tfma.MetricConfig(
                        class_name="AccuracyAndCrossEntropy",
                        module="components.trainer.eval_metrics",
                    ),
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
        range_config=range_config(config.span, None),
        user_dim=config.user_dim,
        item_dim=config.item_dim,
    )
    return ExamplesSource(components=[example_gen], examples=example_gen.outputs["examples"])


def rolling_window(config: PipelineConfig, example_gen, examples):
    """The Examples Transform and the Trainer see: the last `window_spans` spans ExampleGen has
    ingested in any run of this pipeline, resolved in ML Metadata by TFX's `rolling_range`
    (the latest version of each span). Window 1 is ExampleGen's output itself: no resolver,
    which open-source KFP (no resolver executors) compiles as is."""
    if config.window_spans < 1:
        raise ValueError(f"window_spans must be >= 1, got {config.window_spans}")
    if config.window_spans == 1:
        return examples
    from tfx.dsl.input_resolution import canned_resolver_functions

    # a Channel of the producer's id and key, not its OutputChannel: the compiler then queries
    # every run of the pipeline, not only this run's (old spans come from the cache of past runs)
    every_span = tfx.dsl.Channel(
        type=tfx.types.standard_artifacts.Examples,
        producer_component_id=example_gen.id,
        output_key="examples",
    )
    # min_spans=1: the first days train on the spans there are (the default, num_spans, would
    # skip Transform and everything after it until the window is full)
    return canned_resolver_functions.rolling_range(
        every_span, num_spans=config.window_spans, min_spans=1
    )


def statistics_sample_rate(lines: int | None, sample_lines: int) -> float:
    """The rate at which StatisticsGen samples: about `sample_lines` of `lines`, at most all."""
    if not lines or sample_lines <= 0 or lines <= sample_lines:
        return 1.0
    return round(sample_lines / lines, 4)


def checked_and_transformed(
    config: PipelineConfig, examples, window=None, drift_gate: bool = False
) -> dict:
    """StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate, then Transform
    (after the gate: anomalies stop the run before it). Statistics and validation are of the
    new span (`examples`); Transform fits the `window` (default: the new span). `drift_gate`:
    the DriftGate (components/validation/drift.py) also stands before Transform."""
    rate = statistics_sample_rate(
        estimated_lines(
            [config.train_data, config.val_data] if config.val_data else [config.train_data]
        ),
        config.statistics_sample_lines,
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=examples,
        stats_options=tfdv.StatsOptions(sample_rate=rate) if rate < 1 else None,
    )
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=str(schema_file_for(config.user_dim, config.item_dim, config.output_dir))
    )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=examples if window is None else window,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=config.transform_config().to_custom_config(),
        materialize=False,
        disable_statistics=True,
    )
    transform.add_upstream_node(anomalies_gate)
    nodes = dict(
        statistics_gen=statistics_gen,
        schema_gen=schema_gen,
        example_validator=example_validator,
        anomalies_gate=anomalies_gate,
    )
    if drift_gate:
        nodes["drift_gate"] = DriftGate(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
            statistics_gen_id=statistics_gen.id,
            label_linf=config.drift_label_linf,
            vector_js=config.drift_vector_js,
            accept_drift=config.accept_drift,
        )
        nodes["drift_check"] = DriftCheck(anomalies=nodes["drift_gate"].outputs["anomalies"])
        transform.add_upstream_node(nodes["drift_check"])
    return dict(nodes, transform=transform)


def trained_and_evaluated(
    config: PipelineConfig,
    examples,
    checked: dict,
    baseline_from: str = "resolver",
    trainer_factory: Callable[[dict], object] | None = None,
    window=None,
    example_gen=None,
) -> dict:
    """Trainer on the `window` of spans (default: `examples`), fine-tuning an imported base
    Model when configured, else (`warm_start` "served") the served model, Evaluator against a
    baseline. `baseline_from`: "served" (local: this pipeline's latest blessed and pushed
    Model, resolved in ML Metadata; components/served_model), "resolver" (TFX's
    LatestBlessedModelStrategy for the Evaluator only: local runs that must not warm start,
    e.g. the MovieLens experiment's from-scratch run), "vertex" (the same Resolver, also the
    Trainer's warm start: Vertex compiles TFX's own strategies only) or "push_records"
    (components/latest_blessed, open-source KFP runs no Resolver node: the serving dir's push
    records, read by a ServedModel step before the Trainer and a LatestBlessedModel step after).
    `trainer_factory(args)` builds the Trainer (kubeflow/resources.py: multi-worker)."""
    nodes = {}
    trainer_args = dict(
        run_fn=RUN_FN,
        examples=examples if window is None else window,
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
    warm = config.warm_start == "served" and not config.base_model
    if baseline_from == "served":  # LocalDagRunner: the served model, from ML Metadata
        warm = warm and example_gen is not None
        served = nodes["model_resolver"] = served_model_resolver(example_gen, warm).with_id(
            # the id the DAG has always had: it is the latest blessed model, pushed
            "latest_blessed_model_resolver"
        )
        if warm:
            trainer_args["base_model"] = served.outputs["base_model"]
    elif baseline_from == "push_records":
        if warm:  # the serving dir's newest complete push, or an empty Model marked found=0
            nodes["served_model"] = ServedModel(absolute(config.serving_dir)).with_id(
                "served_model"
            )
            trainer_args["base_model"] = nodes["served_model"].outputs["model"]
    else:  # TFX's Resolver (Vertex runs it): the latest blessed Model, none on the first run
        warm = warm and baseline_from == "vertex"
        nodes["model_resolver"] = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        if warm:
            trainer_args["base_model"] = nodes["model_resolver"].outputs["model"]
    build_trainer = trainer_factory or (lambda args: tfx.components.Trainer(**args))
    nodes["trainer"] = trainer = build_trainer(trainer_args)
    if baseline_from == "push_records":  # open-source KFP runs no Resolver node
        nodes["model_resolver"] = LatestBlessedModel(
            trainer.outputs["model"], absolute(config.serving_dir)
        ).with_id("latest_blessed_model")
        baseline = nodes["model_resolver"].outputs["baseline"]
    else:
        baseline = nodes["model_resolver"].outputs["model"]
    nodes["evaluator"] = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline,
        eval_config=eval_config(config),
    )
    return nodes


def user_vector_recipe(config: PipelineConfig, source: ExamplesSource):
    """How the training user vectors were made: the `last_n` (and `half_life`) of the
    component that built the samples (SampleGen) when the source has one, else the
    configured recipe (the recipe's CSV lines carry vectors, not how they were made)."""
    from components.common.user_vectors import UserVectorRecipe

    for component in reversed(source.components):
        properties = getattr(component, "exec_properties", None) or {}
        if properties.get("last_n") is not None:
            half_life = properties.get("half_life")
            return UserVectorRecipe(
                last_n=int(properties["last_n"]) or None,
                half_life=float(half_life) if half_life else None,
            )
    return config.user_vector_recipe()


def pushed_and_published(
    config: PipelineConfig, source: ExamplesSource, items: str | None, trained: dict
) -> dict:
    """TwoTowerPusher (blessed models only), ItemEmbeddings of the pushed item tower, and the
    EmbeddingsPublisher (ANN index; Redis when configured), then ServingConfig (models.config,
    infra validation, pruning)."""
    pusher = TwoTowerPusher(
        model=trained["trainer"].outputs["model"],
        model_blessing=trained["evaluator"].outputs["blessing"],
        serving_dir=absolute(config.serving_dir),
    )
    item_embeddings = ItemEmbeddings(
        pushed_model=pusher.outputs["pushed_model"],
        examples=source.examples,
        output_dir=absolute(config.output_dir),
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
        recipe=user_vector_recipe(config, source),
    )
    # what TF Serving loads is decided once the version is published (issue 20)
    serving_config = ServingConfig(
        published=embeddings_publisher.outputs["published"],
        serving_dir=absolute(config.serving_dir),
        output_dir=absolute(config.output_dir),
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
    window = rolling_window(config, source.components[-1], source.examples)
    # daily spans on the local runner: the previous span's statistics come from ML Metadata
    drift_gate = baseline_from == "served" and has_span_placeholder(train_data or "")
    checked = checked_and_transformed(config, source.examples, window, drift_gate)
    trained = trained_and_evaluated(
        config,
        source.examples,
        checked,
        baseline_from,
        trainer_factory,
        window,
        example_gen=source.components[-1],
    )
    served = pushed_and_published(config, source, items, trained)
    if config.serving_log:  # the recall service's logged user vectors against the new span's
        checked["skew_check"] = skew_check_for(config, source.examples)
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
