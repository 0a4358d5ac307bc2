"""finetower: two-tower (DSSM) retrieval fine-tuned from pretrained embeddings.

The package follows the data: pretrain -> samples -> model -> train -> export ->
index/store -> serve. This module re-exports the small public API.
"""

from finetower.dataset import SampleDataset, convert_text, open_samples
from finetower.errors import ArtifactError, DataError, FinetowerError
from finetower.keras_import import import_keras_weights
from finetower.model import ModelConfig, TwoTowerModel, count_parameters
from finetower.predict import embed_file, predict_file, tower_outputs
from finetower.runs import load_run, save_run
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
    "ModelConfig",
    "SampleDataset",
    "TrainConfig",
    "TrainResult",
    "TwoTowerModel",
    "Vectors",
    "convert_text",
    "count_parameters",
    "embed_file",
    "import_keras_weights",
    "load_run",
    "open_samples",
    "plot_model",
    "predict_file",
    "read_text_samples",
    "read_vectors",
    "resume",
    "save_run",
    "summary_table",
    "tower_outputs",
    "train",
    "user_vector",
    "write_text_samples",
    "write_vectors",
]
