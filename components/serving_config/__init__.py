"""ServingConfig: after the EmbeddingsPublisher, decides what TF Serving loads (models.config
with explicit versions and labels), infra-validates the new version, and prunes old ones."""
