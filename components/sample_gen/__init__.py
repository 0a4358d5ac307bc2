"""Fine-tuning samples from interaction logs: MovieLens, a transfer split, a synthetic
two-domain world, and `samples.build_samples` (its steps: `config`, `inputs`, `holdout`,
`negatives`, `writing`)."""
