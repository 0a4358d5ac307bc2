"""Every knob of the pipeline, once, with the recipe's defaults.

The local runner's flags override these; the tfx CLI passes no flags, so each knob can also
come from an environment variable `FINETOWER_<NAME>` (e.g. FINETOWER_OUTPUT_DIR,
FINETOWER_TRAIN_DATA, FINETOWER_EPOCHS).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# the recipe's vector size (128), defined once beside the vectors; every signature that
# defaults a vector size names it
from components.common.vectors import VECTOR_DIM

PIPELINE_NAME = "finetower"

# Where Beam's workers get the pipeline's code. TFX builds a 52 MB sdist of itself for every
# Beam component (3 s, and a /tmp dir it never deletes) unless a beam arg names the workers'
# dependencies. The DirectRunner's workers run in the launching process's own environment
# (this venv, or the pipeline's container) and ignore this flag, so it names exactly that;
# remote profiles name the real image instead (pipeline/beam_profiles.py).
IN_PROCESS_ENVIRONMENT = "finetower-direct-runner-in-process"
DIRECT_RUNNER_CODE = f"--sdk_container_image={IN_PROCESS_ENVIRONMENT}"

# Beam on the local machine: in-memory, one worker, and no attempt to download the Prism
# runner (Beam 2.77's default tries that for every job, and fails offline)
BEAM_IN_MEMORY = [
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    "--runner=DirectRunner",
    DIRECT_RUNNER_CODE,
]


class ConfigError(ValueError):
    """A custom_config that names a field the component does not know."""


def _from_custom_config(kind, custom_config: dict | None):
    """`kind(**custom_config)`; fields left out keep their defaults, unknown ones are refused
    by name (a typo would otherwise train with a default silently)."""
    values = dict(custom_config or {})
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{kind.__name__}: unknown custom_config field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return kind(**values)


@dataclass(frozen=True)
class TransformConfig:
    """What preprocessing_fn reads (Transform's custom_config)."""

    normalize: str = "zscore"  # zscore, l2 or none (components/transform/preprocessing.py)

    def to_custom_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, custom_config: dict | None) -> TransformConfig:
        return _from_custom_config(cls, custom_config)


@dataclass(frozen=True)
class TrainerConfig:
    """What run_fn reads (Trainer's custom_config): the recipe's training, its defaults."""

    epochs: int = 2
    batch_size: int = 128  # the global batch (components/trainer/distribute.py)
    learning_rate: float = 1e-3
    patience: int = 10  # EarlyStopping on val_loss
    seed: int = 0
    user_dim: int = VECTOR_DIM
    item_dim: int = VECTOR_DIM
    normalize: str = TransformConfig.normalize  # recorded in finetower_model.json
    # one_device, mirrored, multi_worker (from TF_CONFIG)
    distribution: str = "one_device"
    # a train split whose files fit this many MB is trained from memory (a bare fit's speed);
    # a larger one streams from ExampleGen's files (memory flat as data grows)
    train_in_memory_mb: float = 256
    # batches per call into TensorFlow on one device, the same updates as one at a time: a
    # streamed split trained at 65-70k samples/s one batch a call, 167-172k at 64 (Keras'
    # per-call Python cost dominates a batch of 128). Multi-device runs use 1.
    steps_per_execution: int = 64

    def to_custom_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, custom_config: dict | None) -> TrainerConfig:
        """The config run_fn was given; the JSON round trip through ML Metadata may turn ints
        into floats, so numbers are cast back to the field's type."""
        config = _from_custom_config(cls, custom_config)
        if int(config.steps_per_execution) < 1:
            raise ConfigError(
                f"TrainerConfig: steps_per_execution must be >= 1, got {config.steps_per_execution}"
            )
        return dataclasses.replace(
            config,
            epochs=int(config.epochs),
            batch_size=int(config.batch_size),
            learning_rate=float(config.learning_rate),
            patience=int(config.patience),
            seed=int(config.seed),
            user_dim=int(config.user_dim),
            item_dim=int(config.item_dim),
            train_in_memory_mb=float(config.train_in_memory_mb),
            steps_per_execution=int(config.steps_per_execution),
        )

    @property
    def single_device(self) -> bool:
        return self.distribution in (None, "", "one_device")


_TRAINER = TrainerConfig()


@dataclass
class PipelineConfig:
    # data
    train_data: str | None = None  # a file or glob; None: the embedded synthetic data set
    val_data: str | None = None  # None: hash-split train_data 80/20
    # spans: train_data/val_data may name `{SPAN}` or `{YYYY}{MM}{DD}`; the newest span is
    # ingested unless `span` names one (the local runner runs once per span of `span_range`)
    span: int | None = None
    span_range: str | None = None  # "A:B", inclusive
    # Transform and Trainer see the last this many ingested spans (resolved in ML Metadata)
    window_spans: int = 1
    items: str | None = None  # item catalogue (CSV item_id,v.. or word2vec text)
    user_dim: int = VECTOR_DIM
    item_dim: int = VECTOR_DIM
    # where everything goes: <output_dir>/{tfx, metadata.sqlite, serving, item_embeddings}
    output_dir: str = "finetower-output"
    # Transform
    normalize: str = TransformConfig.normalize
    # Trainer: the recipe (defaults and meanings in TrainerConfig)
    epochs: int = _TRAINER.epochs
    batch_size: int = _TRAINER.batch_size
    learning_rate: float = _TRAINER.learning_rate
    patience: int = _TRAINER.patience
    seed: int = _TRAINER.seed
    train_in_memory_mb: int = int(_TRAINER.train_in_memory_mb)
    steps_per_execution: int = _TRAINER.steps_per_execution
    base_model: str | None = None  # a Model folder (with Format-Serving/) to fine-tune from
    # served: the Trainer starts from this pipeline's served model (latest blessed and pushed,
    # from ML Metadata) when there is one; none: Keras' initialisation. base_model wins.
    warm_start: str = "served"
    # Evaluator: the blessing that gates the push
    auc_floor: float = 0.6
    regression_tolerance: float = 0.01  # AUC may fall by at most this against the last blessed
    # StatisticsGen reads about this many lines a run: TFDV samples record batches at
    # min(1, this / the inputs' lines), estimated from their bytes when the DAG is built
    # (every line when that is unknown: spans, inputs on an object store). Per-line
    # anomalies (a bad value, a missing field, a label not 0/1) are ExampleGen's, on every
    # line; the statistics judge distributions, which 500k lines measure as well as 6M.
    # 0: every line.
    statistics_sample_lines: int = 500_000
    # drift gate (daily spans): the new span's statistics against the previous span's (TFDV);
    # over a threshold the run stops before Transform unless accept_drift
    drift_label_linf: float = 0.1  # L-infinity distance of the label's distribution
    # Jensen-Shannon divergence of a vector feature's values: day-to-day sampling noise of
    # 3,200-row spans measured 0.077-0.083 in the simulation, a shifted span 0.88
    drift_vector_js: float = 0.2
    accept_drift: bool = False
    # the local runner only: simulate this many days (pipeline/simulation.py); 0: one run
    simulate_days: int = 0
    # Pusher
    base_path_prefix: str | None = None  # rewrite base paths in models.config (e.g. /models)
    keep_versions: int = 0  # prune old tower versions beyond this many (0: keep all)
    beam_pipeline_args: list[str] = field(default_factory=lambda: list(BEAM_IN_MEMORY))
    # Trainer's tf.distribute strategy: one_device, mirrored, multi_worker (from TF_CONFIG)
    distribution: str = _TRAINER.distribution
    # after the push: item embeddings into Redis (off unless a URL is given) and the ANN index
    redis_url: str | None = None
    ann_backend: str = "ivf"  # flat, hnsw, ivf (MIPS-to-L2), annoy
    ann_params: str = ""  # JSON for the backend, e.g. '{"nprobe": 96}' ("": its defaults)
    pipeline_name: str = PIPELINE_NAME
    # ML Metadata's SQLite file; None: <output_dir>/metadata.sqlite (give a local file when
    # output_dir is on an object store: SQLite opens local files only)
    metadata_file: str | None = None
    # -- the user-vector recipe and training/serving skew (issue 21, points 4 and 6) --
    # how the training data's user vectors were made from histories, for the recipe's CSV
    # (its lines carry vectors, not how they were made; SampleGen's path records its own):
    # the mean of the last N items' pretrained vectors (0: the whole history), weighted by an
    # optional half-life in positions. Recorded with each published version; the recall
    # service averages histories with the recipe of the version it serves.
    user_vector_last_n: int = 5
    user_vector_half_life: float | None = None
    # a folder of user vectors the recall service logged (`--serving_log`); None: no skew step
    serving_log: str | None = None
    # Jensen-Shannon divergence of one user-vector dimension, training against serving, above
    # which SkewCheck records an anomaly (it does not stop the run: components/validation/skew.py);
    # measured on the demo data: 0.018-0.031 for like distributions (400-10,000 logged rows);
    # one dimension shifted by 0.5 / 1 / 3 standard deviations 0.067 / 0.17 / 0.75
    skew_vector_js: float = 0.1
    # rows SkewCheck reads of each side: the training files' first (read side by side) and the
    # serving log's newest (the log holds up to 100 files x 10,000 rows: 0.5 GB at 128-d)
    skew_max_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.redis_url and urlsplit(self.redis_url).password is not None:
            # exec properties are recorded in ML Metadata and in compiled specs
            raise ConfigError(
                "redis_url holds a password, which ML Metadata and compiled specs would record: "
                "give the URL without it and the password in $FINETOWER_REDIS_PASSWORD, which "
                "the steps that use Redis read when they run"
            )

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "tfx")

    @property
    def metadata_path(self) -> str:
        return self.metadata_file or os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")

    def trainer_config(self) -> TrainerConfig:
        """The Trainer's part of this configuration (its custom_config, typed)."""
        return self._part(TrainerConfig)

    def transform_config(self) -> TransformConfig:
        return self._part(TransformConfig)

    def user_vector_recipe(self):
        """How the training data's user vectors were made (components/common/user_vectors)."""
        from components.common.user_vectors import UserVectorRecipe

        return UserVectorRecipe(
            last_n=self.user_vector_last_n or None, half_life=self.user_vector_half_life or None
        )

    def _part(self, kind):
        """`kind` (a config dataclass whose fields are all knobs here) from these values."""
        return kind(**{f.name: getattr(self, f.name) for f in dataclasses.fields(kind)})


def _parse(value: str, kind: type):
    if kind is bool:
        return value.lower() in ("1", "true", "yes")
    if kind is list:
        return value.split()
    return kind(value)


def _field_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    for kind in (int, float, list, bool):
        if text.startswith(kind.__name__):
            return kind
    return str


def from_environment(environ=os.environ, **overrides) -> PipelineConfig:
    """PipelineConfig from FINETOWER_<NAME> variables, then `overrides` (None: not given)."""
    values = {}
    for f in dataclasses.fields(PipelineConfig):
        raw = environ.get(f"FINETOWER_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _parse(raw, _field_type(f))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineConfig(**values)
