"""A local stand-in for `tensorflow_model_server`, for tests and laptops without a container
engine (production runs the real binary, serving/tf_serving/):

    python -m serving.model_server --port 8500 --rest_api_port 8501 \
        --model_config_file serving/models.config [--model_config_file_poll_wait_seconds 30]

It speaks TF Serving's gRPC PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest) and its REST predict/status/metadata API over the
SavedModels of a models.config, with TF Serving's version policies, version labels and polling.
It does not batch, warm up, or serve Classify/Regress/MultiInference.
"""

from serving.model_server.errors import ServingError
from serving.model_server.registry import (
    ModelRegistry,
    aspired_versions,
    read_model_server_config,
)

__all__ = ["ModelRegistry", "ServingError", "aspired_versions", "read_model_server_config"]
