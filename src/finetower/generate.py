"""Generated pointwise samples with a learnable signal, for tests and benchmarks.

A sample is a random user vector and item vector; it is a click when the two agree on a
hidden low-dimensional taste (a noisy dot product), which a two-tower model can learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetower.textformat import SampleChunk, write_text_samples


def generate_samples(
    rows: int,
    *,
    user_dim: int = 128,
    item_dim: int = 128,
    taste_dim: int = 8,
    noise: float = 0.5,
    seed: int = 0,
) -> SampleChunk:
    """Return `rows` samples; roughly half are clicks."""
    rng = np.random.default_rng(seed)
    # like pretrained embeddings, the vectors are low-rank tastes seen through a fixed
    # map, plus noise; a click is a noisy agreement of the user's and the item's tastes
    user_map = np.random.default_rng(1_000_003).normal(size=(taste_dim, user_dim))
    item_map = np.random.default_rng(1_000_033).normal(size=(taste_dim, item_dim))
    user_taste = rng.normal(size=(rows, taste_dim))
    item_taste = rng.normal(size=(rows, taste_dim))
    users = (user_taste @ user_map + rng.normal(scale=0.5, size=(rows, user_dim))) / 4
    items = (item_taste @ item_map + rng.normal(scale=0.5, size=(rows, item_dim))) / 4
    affinity = np.einsum("nd,nd->n", user_taste, item_taste) / np.sqrt(taste_dim)
    labels = (affinity + rng.normal(scale=noise, size=rows) > 0).astype(np.float32)
    users, items = users.astype(np.float32), items.astype(np.float32)
    return SampleChunk(labels=labels, users=users, items=items)


def write_generated_text(
    path: str | Path, rows: int, *, seed: int = 0, chunk_rows: int = 50_000, **kwargs
) -> Path:
    """Write generated samples in the recipe's text format, in chunks of `chunk_rows`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, chunk_rows):
        chunk = generate_samples(min(chunk_rows, rows - start), seed=seed * 7919 + start, **kwargs)
        write_text_samples(path, chunk.labels, chunk.users, chunk.items, append=start > 0)
    return path
