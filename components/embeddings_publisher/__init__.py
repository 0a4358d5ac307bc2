"""EmbeddingsPublisher: a pushed version's item embeddings into an ANN index (`ann`) and into
Redis (`publishing.publish_version`)."""
