"""Retrieval evaluation: exact full-catalogue ranking metrics, baselines and ANN recall."""
