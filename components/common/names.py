"""File and folder names that more than one stage (or the online service) reads: written once
here and imported, so a writer and its readers cannot drift apart."""

MANIFEST_FILE = "manifest.json"

# item2vec (Item2VecVectors artifact, and `pretrain`'s output folder)
ITEM_VECTORS_TEXT = "item_vectors.txt"
ITEM_VECTORS_BINARY = "item_vectors.bin"
ITEM_VECTORS_PARQUET = "item_vectors.parquet"
USER_VECTORS_TEXT = "user_vectors.txt"
USER_VECTORS_BINARY = "user_vectors.bin"

# SampleGen's ItemCatalogue and HeldOutInteractions artifacts
CATALOGUE_TEXT = "catalogue.txt"
CATALOGUE_TABLE = "catalogue.parquet"
HISTORIES_TABLE = "histories.parquet"


def interactions_table(split: str) -> str:
    """The target events of one split: `{train,val,test}_interactions.parquet`."""
    return f"{split}_interactions.parquet"


# ItemEmbeddings' artifact, and its published copy `<output_dir>/item_embeddings/<version>/`
ITEM_EMBEDDINGS_DIR = "item_embeddings"
EMBEDDINGS_FILE = "embeddings.parquet"

# EmbeddingsPublisher's index, `<output_dir>/ann_index/<version>/`
ANN_DIR = "ann_index"
ANN_ITEM_VECTORS = "item_vectors.npy"

# TF Serving's layout under the serving dir: `<serving_dir>/<tower>/<version>/saved_model.pb`
USER_TOWER = "user_tower"
ITEM_TOWER = "item_tower"
TOWERS = (USER_TOWER, ITEM_TOWER)
SAVED_MODEL_FILE = "saved_model.pb"
