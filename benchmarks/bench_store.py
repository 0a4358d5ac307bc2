"""Redis store speed: publish items/s, bulk load, online lookups, against a local redis-server.

    .venv/bin/python benchmarks/bench_store.py                   # 1,000,000 items
    .venv/bin/python benchmarks/bench_store.py --items 100000

Items have 64-d embeddings and 128-d pretrained vectors (768 MB of float32 for 1M). The
benchmark starts its own redis-server on a free loopback port and stops it at the end.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redis_server import RedisServer  # noqa: E402  (the tests' launcher, one implementation)

from finetower.store import StoreReader, publish  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--item-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2000, help="online lookups of 10 ids")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids = [f"item{i}" for i in range(args.items)]
    embeddings = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    vectors = rng.standard_normal((args.items, args.item_dim), dtype=np.float32)
    megabytes = (embeddings.nbytes + vectors.nbytes) / 2**20
    print(f"{args.items:,} items x {args.dim}-d embeddings + {args.item_dim}-d vectors "
          f"({megabytes:,.0f} MB), batch {args.batch:,}")  # fmt: skip

    with tempfile.TemporaryDirectory() as directory, RedisServer(directory) as server:
        for attempt in ("first publish", "second publish (old version kept)"):
            report = publish(server.url, "bench", ids, embeddings, vectors, 0.0, batch=args.batch)
            print(f"{attempt:<34} {report.seconds:7.2f} s  {report.items_per_s:>12,.0f} items/s  "
                  f"{megabytes / report.seconds:7.0f} MB/s")  # fmt: skip

        with StoreReader(server.url) as reader:
            start = time.perf_counter()
            loaded = reader.load()
            seconds = time.perf_counter() - start
            same = loaded.item_embeddings.tobytes() == embeddings.tobytes()
            print(f"{'bulk load':<34} {seconds:7.2f} s  {args.items / seconds:>12,.0f} items/s  "
                  f"{megabytes / seconds:7.0f} MB/s  (identical: {same})")  # fmt: skip

            version = reader.current_version()
            histories = rng.integers(0, args.items, size=(args.lookups, 10))
            latencies = np.empty(args.lookups)
            for n, history in enumerate(histories):
                start = time.perf_counter()
                reader.item_vectors_for([ids[i] for i in history], version)
                latencies[n] = time.perf_counter() - start
            p50, p99 = np.percentile(latencies * 1e3, [50, 99])
            print(f"{'item_vectors_for(10 ids)':<34} p50 {p50:.2f} ms  p99 {p99:.2f} ms "
                  f"({args.lookups:,} lookups, version pinned)")  # fmt: skip


if __name__ == "__main__":
    main()
