"""Throughput of the data stages: item2vec pretraining (words/s) and sample building (rows/s).

    .venv/bin/python benchmarks/bench_data.py [--events 1000000] [--workers 2] [--text]

Pretraining trains on a synthetic source log of about `--events` events and reports
words/s as gensim counts them (tokens trained after downsampling, per second of
`Word2Vec.train`). Sample building turns a synthetic target log of about `--events`
events into train/val/test samples (4 negatives each, so ~5 rows per event) and reports
rows/s for the whole `build_samples` call, with the converted data sets written (and the
text files with `--text`). Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from finetower.datasets import synthetic_world
from finetower.pretrain import PretrainConfig, sequences_from_log, train_item2vec
from finetower.samples import SampleConfig, build_samples
from finetower.vectors import Vectors, write_vectors

N_ITEMS = 5_000


def bench_pretrain(events: int, workers: int, dim: int, epochs: int) -> None:
    world = synthetic_world(n_users=events // 50, n_items=N_ITEMS, source_per_user=50, seed=0)
    sequences = sequences_from_log(world.source)
    config = PretrainConfig(dim=dim, epochs=epochs, workers=workers, min_count=1)
    vectors, stats = train_item2vec(sequences.items, config)
    print(
        f"pretrain: {world.source.num_rows:,} events, {len(vectors):,} items, dim {dim}, "
        f"{epochs} epochs, {workers} workers: {stats['words_per_second']:,} words/s "
        f"({stats['words_trained']:,} words in {stats['seconds']} s)"
    )


def bench_samples(events: int, dim: int, text: bool, workdir: Path) -> None:
    world = synthetic_world(
        n_users=events // 20, n_items=N_ITEMS, source_per_user=20, target_per_user=20, seed=0
    )
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(N_ITEMS)]
    write_vectors(
        workdir / "vectors/item_vectors.bin",
        Vectors(rng.standard_normal((len(ids), dim)).astype(np.float32), ids),
    )
    started = time.perf_counter()
    manifest = build_samples(
        world.target,
        workdir / "vectors",
        workdir / "samples",
        source=world.source,
        config=SampleConfig(text=text),
    )
    seconds = time.perf_counter() - started
    rows = sum(split["rows"] for split in manifest["splits"].values())
    written = sum(f.stat().st_size for f in (workdir / "samples").rglob("*") if f.is_file())
    print(
        f"samples: {world.target.num_rows:,} target + {world.source.num_rows:,} source events, "
        f"dim {dim}, text {'on' if text else 'off'}: {rows:,} rows in {seconds:.2f} s = "
        f"{rows / seconds:,.0f} rows/s, {world.target.num_rows / seconds:,.0f} events/s, "
        f"{written / seconds / 2**20:,.0f} MiB/s written"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128, help="pretraining vector size")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sample-dim", type=int, default=32, help="vector size in samples")
    parser.add_argument("--text", action="store_true", help="also write the text files")
    args = parser.parse_args()
    bench_pretrain(args.events, args.workers, args.dim, args.epochs)
    with tempfile.TemporaryDirectory() as workdir:
        bench_samples(args.events, args.sample_dim, args.text, Path(workdir))


if __name__ == "__main__":
    main()
