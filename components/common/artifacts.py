"""finetower's own artifact types, in one module every stage may import (a stage imports the
types of its inputs from here, never another stage's package)."""

from __future__ import annotations

from tfx import types


class Item2VecVectors(types.Artifact):
    """Pretrained item vectors: word2vec text/binary, Parquet, manifest.json."""

    TYPE_NAME = "finetower.Item2VecVectors"


class ItemCatalogue(types.Artifact):
    """Items to embed and rank: catalogue.txt (word2vec text) and catalogue.parquet."""

    TYPE_NAME = "finetower.ItemCatalogue"


class HeldOutInteractions(types.Artifact):
    """Target events by split, and the histories query vectors are made of."""

    TYPE_NAME = "finetower.HeldOutInteractions"


class ItemEmbeddingsArtifact(types.Artifact):
    """Item embeddings of one pushed version: embeddings.parquet + manifest.json, and the
    pushed towers they were made with (`components.pusher.pushed`)."""

    TYPE_NAME = "finetower.ItemEmbeddings"


class PublishedEmbeddingsArtifact(types.Artifact):
    """What was published of one version: the ANN index folder, the Redis version."""

    TYPE_NAME = "finetower.PublishedEmbeddings"


class RetrievalMetrics(types.Artifact):
    """metrics.json, report.md and recall.png of one retrieval evaluation."""

    TYPE_NAME = "finetower.RetrievalMetrics"
