"""Clients of the towers served by TF Serving (or `python -m serving.model_server`) over gRPC.

    client = UserTowerClient("localhost:8500")            # or version=3 / version_label="stable"
    out = client.embed(user_vectors)                       # float32 [batch, 128]
    out.query, out.user_embedding                          # [batch, 64] each
    out.served_version, out.bias                           # int, [batch, 1]

sigmoid(query · item_embedding + bias) is the model's probability. On first use a client checks
the served signature once (GetModelMetadata) and raises TowerMismatchError when the model is
missing or is not the tower it expects. Every call has a deadline (`timeout_s`, retries
included) or the caller's own `deadline`; UNAVAILABLE is retried with exponential backoff, at
most `retries` times. Importing this package does not load TensorFlow's runtime (see
`protocol`): a recall process stays small.

    protocol.py  TF Serving's generated protos, loaded without TensorFlow; tensors <-> numpy
    tower.py     TowerClient: deadline and retries, signature check, predict, model status
    towers.py    UserTowerClient, ItemTowerClient
"""

from serving.client.errors import (
    ServingClientError,
    ServingRequestError,
    ServingUnavailableError,
    TowerMismatchError,
)
from serving.client.protocol import DEFAULT_SIGNATURE, float_array, float_tensor
from serving.client.tower import MAX_MESSAGE_BYTES, TowerClient
from serving.client.towers import (
    ITEM_TOWER_OUTPUTS,
    USER_TOWER_OUTPUTS,
    ItemTowerClient,
    ItemTowerOutput,
    UserTowerClient,
    UserTowerOutput,
)

__all__ = [
    "DEFAULT_SIGNATURE",
    "ITEM_TOWER_OUTPUTS",
    "MAX_MESSAGE_BYTES",
    "USER_TOWER_OUTPUTS",
    "ItemTowerClient",
    "ItemTowerOutput",
    "ServingClientError",
    "ServingRequestError",
    "ServingUnavailableError",
    "TowerClient",
    "TowerMismatchError",
    "UserTowerClient",
    "UserTowerOutput",
    "float_array",
    "float_tensor",
]
