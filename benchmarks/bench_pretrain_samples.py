"""Pretraining words/s and sample building rows/s, on a seeded synthetic two-domain world.

    python -m benchmarks.bench_pretrain_samples [--users 10000 --dim 128 --workers 2]

Prints item2vec's words/s (gensim's effective words, after frequent-item down-sampling, and
raw events x epochs) for the reproducible mode (1 worker) and the fast mode (`--workers`),
and per CPU-second of the process (all threads: what an idle core would give, on a
shared machine where wall-clock figures fall with the load),
and sample building rows/s: `build_samples` alone (user vectors, negatives, ids tables) and
the SampleGen executor (the same plus tf.Example encoding and TFRecord writes). Goals:
>= 250k words/s on 2 cores, >= 300k rows/s. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pyarrow.parquet as pq  # noqa: E402

from components.item2vec.pretrain import PretrainConfig, pretrain  # noqa: E402
from components.sample_gen.samples import SampleConfig, build_samples  # noqa: E402
from components.sample_gen.synthetic import synthetic_world  # noqa: E402


def bench_pretrain(log: Path, out: Path, dim: int, workers: int, epochs: int) -> dict:
    config = PretrainConfig(dim=dim, epochs=epochs, workers=workers, min_count=5)
    cpu = time.process_time()
    manifest = pretrain(log, out, config).manifest
    cpu = time.process_time() - cpu  # every thread's CPU, reading and writing included
    training = manifest["training"]
    return {
        "workers": workers,
        "words_per_cpu_s": training["words_trained"] / max(cpu, 1e-9),
        "seconds": training["seconds"],
        "effective_words_per_s": training["words_per_second"],
        "raw_words_per_s": manifest["events"] * epochs / max(training["seconds"], 1e-9),
    }


def bench_samples(target: Path, source: Path, vectors: Path, out: Path) -> dict:
    build_samples(target, vectors, out, source=source, config=SampleConfig(text=False))  # warm
    started, cpu = time.perf_counter(), time.process_time()
    manifest = build_samples(target, vectors, out, source=source, config=SampleConfig(text=False))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = sum(split["rows"] for split in manifest["splits"].values())
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "cpu_s": cpu}


def bench_sample_gen(target: Path, source: Path, vectors_dir: Path, out: Path) -> dict:
    from tfx.types import standard_artifacts

    from components.item2vec.component import Item2VecVectors
    from components.sample_gen.component import Executor, HeldOutInteractions, ItemCatalogue

    vectors = Item2VecVectors()
    vectors.uri = str(vectors_dir)
    outputs = {
        "examples": standard_artifacts.Examples(),
        "catalogue": ItemCatalogue(),
        "held_out": HeldOutInteractions(),
    }
    for name, artifact in outputs.items():
        artifact.uri = str(out / name)
    params = dict(
        target_log=str(target),
        history_log=str(source),
        negatives=4,
        negative_sampling="uniform",
        last_n=5,
        seed=0,
    )
    started = time.perf_counter()
    Executor().Do({"item_vectors": [vectors]}, {k: [v] for k, v in outputs.items()}, params)
    seconds = time.perf_counter() - started
    examples = outputs["examples"]
    rows = sum(examples.get_int_custom_property(f"{s}_rows") for s in ("train", "eval"))
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    world = synthetic_world(
        n_users=args.users, n_items=args.items, source_per_user=40, target_per_user=10
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pq.write_table(world.source, root / "source.parquet")
        pq.write_table(world.target, root / "target.parquet")
        print(
            f"world: {args.users} users, {args.items} items; source {world.source.num_rows} "
            f"events, target {world.target.num_rows}; dim {args.dim}, {os.cpu_count()} CPUs"
        )
        for workers in sorted({1, args.workers}):
            result = bench_pretrain(
                root / "source.parquet", root / f"vectors{workers}", args.dim, workers, args.epochs
            )
            mode = "reproducible" if workers == 1 else "fast"
            print(
                f"item2vec {mode:12s} workers={workers}: {result['effective_words_per_s']:>10,.0f} "
                f"words/s effective, {result['raw_words_per_s']:>10,.0f} raw "
                f"({result['seconds']:.2f} s; goal >= 250,000); "
                f"{result['words_per_cpu_s']:,.0f} words per CPU-second"
            )
        vectors = root / "vectors1"
        samples = bench_samples(
            root / "target.parquet", root / "source.parquet", vectors, root / "samples"
        )
        print(
            f"build_samples:  {samples['rows']:,} rows in {samples['seconds']:.2f} s = "
            f"{samples['rows_per_s']:,.0f} rows/s (goal >= 300,000); "
            f"{samples['rows'] / max(samples['cpu_s'], 1e-9):,.0f} rows per CPU-second"
        )
        gen = bench_sample_gen(
            root / "target.parquet", root / "source.parquet", vectors, root / "sample_gen"
        )
        print(
            f"SampleGen executor (with tf.Examples): {gen['rows']:,} rows in "
            f"{gen['seconds']:.2f} s = {gen['rows_per_s']:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
