"""Fine-tuning samples from interaction logs: logs and their checks, MovieLens, a transfer
split, a synthetic two-domain world, and `samples.build_samples`."""
