"""Recall service under load: throughput and p50/p95/p99 latency, from a second process.

    .venv/bin/python benchmarks/bench_serve.py                      # 1,000,000 items, HNSW
    .venv/bin/python benchmarks/bench_serve.py --items 100000 --workdir /tmp/bench-serve

Trains a model (64-d pretrained vectors in, 64-d towers) on generated samples, draws 1M x
64-d item vectors from the same generator, builds an HNSW index (`finetower index`'s
defaults), starts a redis-server and publishes the items, then runs `finetower serve --redis`
in a subprocess on loopback. The load is an async httpx loop in this process with a fixed
number of requests per step:
- closed loop at a few concurrency levels (each worker sends its next request when the last
  answered): throughput and latency;
- open loop at a fixed rate (`--rate`, the target's 200 requests/s): latency counted from each
  request's scheduled time, so a slow server cannot hide queueing (no coordinated omission).
Requests are histories of `--history` random items (two Redis round trips each) and, for
comparison, user vectors (no Redis). `--workdir` keeps the model and index for the next run.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redis_server import RedisServer, free_port  # noqa: E402  (the tests' launcher)

from finetower.generate import generate_samples, write_generated_text  # noqa: E402
from finetower.recall import build_item_index  # noqa: E402
from finetower.store import load_index_catalog, publish  # noqa: E402
from finetower.train import TrainConfig, train  # noqa: E402

DIM = 64
SERVER = """
import sys
from finetower.serve import serve
serve(sys.argv[1], redis_url=sys.argv[2], port=int(sys.argv[3]), history_vectors=sys.argv[4],
      log_level="warning")
"""


def artifacts(workdir: Path, n_items: int) -> Path:
    """The index directory (built once per workdir and item count).

    The model is trained (the recipe, 64-d in) on `finetower.generate` samples and the items
    are that generator's item vectors: an untrained model's embeddings are degenerate, and
    HNSW searched them ~50 ms a query at 1M whatever efSearch.
    """
    index_dir = workdir / f"index-trained-{n_items}"
    if (index_dir / "manifest.json").exists():
        print(f"reusing {index_dir}")
        return index_dir
    items = generate_samples(n_items, user_dim=DIM, item_dim=DIM, seed=11).items
    np.save(workdir / f"items-{n_items}.npy", items)
    del items
    run_dir = workdir / "run-trained"
    if not (run_dir / "config.json").exists():
        samples = write_generated_text(workdir / "train.txt", 50_000, user_dim=DIM, item_dim=DIM)
        config = TrainConfig(epochs=2, batch_size=256, text_mode="stream")
        train(samples, run_dir, config=config, tower=(DIM,), progress=False)
    started = time.perf_counter()
    build_item_index(run_dir, workdir / f"items-{n_items}.npy", index_dir, backend="hnsw")
    print(f"hnsw index of {n_items:,} items built in {time.perf_counter() - started:.1f} s")
    return index_dir


def wait_ready(url: str, process: subprocess.Popen, deadline_s: float = 600.0) -> dict:
    tick, end = threading.Event(), time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            response = httpx.get(f"{url}/health", timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        tick.wait(0.1)  # polling pace while the server loads
    raise RuntimeError(f"the server was not ready within {deadline_s} s")


def server_time(url: str) -> tuple[float, int]:
    """(seconds, requests) the server spent on /recall so far, from its own /metrics."""
    total, count = 0.0, 0
    for line in httpx.get(f"{url}/metrics", timeout=5.0).text.splitlines():
        if line.startswith('finetower_request_seconds_sum{route="/recall"}'):
            total = float(line.split()[-1])
        elif line.startswith('finetower_request_seconds_count{route="/recall"}'):
            count = int(line.split()[-1])
    return total, count


def server_mean(url: str, before: tuple[float, int]) -> str:
    total, count = server_time(url)
    if count == before[1]:
        return ""
    return f"  (server mean {(total - before[0]) / (count - before[1]) * 1000:5.2f} ms)"


def percentiles(latencies: list[float]) -> str:
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms"


class Load:
    """Request bodies drawn up front, so the loop measures the server, not numpy."""

    def __init__(self, n_items: int, history: int, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_items, self.history = n_items, history

    def bodies(self, n: int, kind: str) -> list[dict]:
        if kind == "history":
            draws = self.rng.integers(0, self.n_items, size=(n, self.history))
            return [{"history": [str(i) for i in row], "k": 50} for row in draws]
        vectors = self.rng.normal(size=(n, DIM)).round(4)
        return [{"user_vector": row.tolist(), "k": 50} for row in vectors]


async def closed_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures = 0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            nonlocal failures
            for body in queue:  # shared iterator: every body is sent once
                started = time.perf_counter()
                response = await client.post("/recall", json=body)
                latencies.append(time.perf_counter() - started)
                failures += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if failures:
        print(f"  {failures} requests failed")
    return len(bodies) / wall, latencies


async def open_loop(url: str, bodies: list[dict], rate: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        start = time.perf_counter()

        async def one(i: int, body: dict) -> None:
            nonlocal failures
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))  # the schedule
            response = await client.post("/recall", json=body)
            latencies.append(time.perf_counter() - scheduled)
            failures += response.status_code != 200

        await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))
        wall = time.perf_counter() - start
    if failures:
        print(f"  {failures} requests failed")
    return len(bodies) / wall, latencies


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(7)
request = function()
  local h = {}
  for i = 1, HISTORY do h[i] = '"' .. tostring(math.random(0, ITEMS - 1)) .. '"' end
  local body = '{"history": [' .. table.concat(h, ",") .. '], "k": 50, "exclude_seen": true}'
  return wrk.format(nil, "/recall", nil, body)
end
"""


def wrk_load(url: str, n_items: int, history: int, connections: int, seconds: int) -> str:
    """A C load generator (Debian's wrk): the Python client above saturates the shared cores
    long before the server does. Closed loop over `connections`, bounded by `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.replace("HISTORY", str(history)).replace("ITEMS", str(n_items)))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
    latency = {p: re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1) for p in ("50", "90", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = f", {errors.group(1)} failed" if errors else ""
    return (f"{float(rate):7.0f} req/s  p50 {latency['50']}  p90 {latency['90']}  "
            f"p99 {latency['99']}{failed}")  # fmt: skip


def measure(index_dir: Path, redis_url: str, mode: str, args: argparse.Namespace, levels) -> None:
    """Start `finetower serve --redis` with `--history-vectors mode`, load it, print figures."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(index_dir), redis_url, str(port), mode],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        started = time.perf_counter()
        health = wait_ready(url, server)
        ready_s = time.perf_counter() - started
        print(f"\nhistory vectors from {mode}: ready in {ready_s:.1f} s, {health['items']:,} "
              f"items, {health['backend']}, index {health['index']}")  # fmt: skip
        load = Load(args.items, args.history)
        asyncio.run(closed_loop(url, load.bodies(200, "history"), 4))  # warm-up
        print(f"closed loop, {args.requests:,} requests per level, k 50:")
        for kind in ("history", "user_vector"):
            for concurrency in levels if kind == "history" else levels[:1]:
                bodies = load.bodies(args.requests, kind)
                before = server_time(url)
                throughput, latencies = asyncio.run(closed_loop(url, bodies, concurrency))
                print(f"  {kind:<11} concurrency {concurrency:>3}: "
                      f"{throughput:7.0f} req/s  {percentiles(latencies)}"
                      f"{server_mean(url, before)}")  # fmt: skip
        if shutil.which("wrk"):
            print("wrk (C, one thread), 10 s per level, histories, k 50:")
            for connections in (1, 2, 4):
                line = wrk_load(url, args.items, args.history, connections, 10)
                print(f"  connections {connections}: {line}")
        else:
            print("wrk not found (apt-get install wrk): skipping the C load generator")
        bodies = load.bodies(args.requests, "history")
        before = server_time(url)
        achieved, latencies = asyncio.run(open_loop(url, bodies, args.rate))
        print(f"open loop at {args.rate:.0f} req/s ({args.requests:,} histories): "
              f"achieved {achieved:.0f} req/s  {percentiles(latencies)}"
              f"{server_mean(url, before)}  (target p99 < 20 ms)")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per step")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--history", type=int, default=5, help="items per history")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--modes", default="store,memory", help="history vectors: from Redis, or in memory"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        index_dir = artifacts(workdir, args.items)
        with RedisServer(Path(scratch) / "redis") as redis_server:
            catalog = load_index_catalog(index_dir)
            report = publish(
                redis_server.url, catalog.fingerprint, catalog.ids, catalog.item_embeddings,
                catalog.item_vectors, catalog.bias, source=catalog.source,
            )  # fmt: skip
            print(f"published {report.items:,} items in {report.seconds:.2f} s "
                  f"({report.items_per_s:,.0f} items/s)")  # fmt: skip
            del catalog
            for mode in args.modes.split(","):
                measure(index_dir, redis_server.url, mode, args, levels)


if __name__ == "__main__":
    main()
