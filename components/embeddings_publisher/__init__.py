"""EmbeddingsPublisher: a pushed version's item embeddings into an ANN index and into Redis."""
