"""Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines."""
