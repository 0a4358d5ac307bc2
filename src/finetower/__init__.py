"""finetower: two-tower (DSSM) retrieval fine-tuned from pretrained embeddings.

The package follows the data: pretrain -> samples -> model -> train -> export ->
index/store -> serve. This module re-exports the small public API.
"""

from finetower.dataset import SampleDataset, convert_text, open_samples
from finetower.datasets import load_movielens, synthetic_world, transfer_split
from finetower.errors import ArtifactError, DataError, FinetowerError
from finetower.evaluate import evaluate_models, ranking_metrics
from finetower.export import folded_queries, item_embeddings
from finetower.id_towers import IdTowers
from finetower.index import ItemIndex, load_index, make_index
from finetower.keras_import import import_keras_weights
from finetower.model import ModelConfig, TwoTowerModel, count_parameters
from finetower.predict import embed_file, predict_file, tower_outputs
from finetower.pretrain import PretrainConfig, pretrain
from finetower.recall import Recaller, build_item_index
from finetower.runs import load_run, save_run
from finetower.samples import SampleConfig, build_samples
from finetower.store import StoreReader, publish, rollback
from finetower.summary import plot_model, summary_table
from finetower.textformat import read_text_samples, write_text_samples
from finetower.train import TrainConfig, TrainResult, resume, train
from finetower.user_vectors import user_vector
from finetower.vectors import Vectors, read_vectors, write_vectors

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "DataError",
    "FinetowerError",
    "IdTowers",
    "ItemIndex",
    "ModelConfig",
    "PretrainConfig",
    "Recaller",
    "SampleConfig",
    "SampleDataset",
    "StoreReader",
    "TrainConfig",
    "TrainResult",
    "TwoTowerModel",
    "Vectors",
    "build_item_index",
    "build_samples",
    "convert_text",
    "count_parameters",
    "embed_file",
    "evaluate_models",
    "folded_queries",
    "import_keras_weights",
    "item_embeddings",
    "load_index",
    "load_movielens",
    "load_run",
    "make_index",
    "open_samples",
    "plot_model",
    "predict_file",
    "pretrain",
    "publish",
    "ranking_metrics",
    "read_text_samples",
    "read_vectors",
    "resume",
    "rollback",
    "save_run",
    "summary_table",
    "synthetic_world",
    "tower_outputs",
    "train",
    "transfer_split",
    "user_vector",
    "write_text_samples",
    "write_vectors",
]
