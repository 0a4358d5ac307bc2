"""Serving benchmark, one command, figures and ratios to the targets in the same run:

    python -m benchmarks.bench_recall [--items 1000000] [--seconds 10] [--rates 200 1000]

1. Redis publish (serving.store.publish) of `--items` items: items/s (target >= 100k/s).
2. faiss IVF (the EmbeddingsPublisher's default index) over the same items: recall@100 against
   exact search and queries/s on one thread (target >= 0.95 at >= 2,000 q/s).
3. `POST /recall` through the real service (uvicorn subprocess) and the local model server on
   this machine, at fixed request rates: p50/p99 latency from each request's scheduled start
   (a late request counts its wait), achieved rate, errors, over `--repeats` runs (ranges);
   the service's cold start (process start -> port answers -> ready) and resident memory.
   Plus wrk's closed-loop maximum when `wrk` is installed.
   `--code_dir DIR` runs the servers from another checkout (e.g. main, for a before/after).

Synthetic data, seeded: item embeddings are ReLU outputs of a Gaussian mixture (the item
tower ends in a ReLU) and queries are such vectors times a folded weight vector; the served
user tower is a stand-in SavedModel with the pushed tower's signature (128 -> 64, ReLU,
`query`, `bias`). Everything listens on 127.0.0.1; counts and durations are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM, USER_DIM, ITEM_DIM, TASTE_DIM = 64, 128, 128, 8
TARGET_PUBLISH = 100_000
TARGET_RECALL, TARGET_QPS = 0.95, 2000
RECALL_QUERIES = 500
USER_MAP_SEED = 100
NPROBE_SWEEP = (20, 40, 64, 96, 128)


def synthetic_items(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item embeddings [n, 64], pretrained vectors [n, 128], folded weights [64]).

    As in the demo world (pipeline/demo_data.py), items have low-rank tastes; the embeddings
    are a ReLU layer over them plus noise, as the item tower's output."""
    rng = np.random.default_rng(seed)
    taste_map = rng.standard_normal((TASTE_DIM, DIM)).astype(np.float32) / np.sqrt(TASTE_DIM)
    embeddings = np.empty((n, DIM), np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        taste = rng.standard_normal((stop - start, TASTE_DIM), dtype=np.float32)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        np.maximum(taste @ taste_map + 0.3 * noise + 0.2, 0, out=embeddings[start:stop])
    vectors = rng.standard_normal((n, ITEM_DIM), dtype=np.float32)
    weights = rng.standard_normal(DIM).astype(np.float32)
    return embeddings, vectors, weights


def queries_like(weights: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Folded queries: user embeddings of the same kind (ReLU over tastes) times w."""
    user_map = np.random.default_rng(USER_MAP_SEED).standard_normal((TASTE_DIM, DIM))
    taste_map = (user_map / np.sqrt(TASTE_DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((count, TASTE_DIM), dtype=np.float32)
    noise = rng.standard_normal((count, DIM), dtype=np.float32)
    return (np.maximum(taste @ taste_map + 0.3 * noise + 0.2, 0) * weights).astype(np.float32)


def bench_publish(ids, embeddings, vectors, workdir: Path) -> dict:
    from serving.store import publish
    from tests.redis_server import RedisServer

    with RedisServer(workdir / "redis") as redis:
        report = publish(redis.url, "bench", ids, embeddings, vectors, 0.1)
    return {"items": report.items, "seconds": report.seconds, "items_per_s": report.items_per_s}


def bench_ivf(ids, embeddings, weights, folder: Path) -> dict:
    """Build the publisher's IVF index at `folder` (as ann_index/<v>), measure recall, speed."""
    import faiss

    from components.embeddings_publisher.publishing import ann_recall, build_ann_index
    from serving.index import load_index

    queries = queries_like(weights, RECALL_QUERIES, seed=1)
    started = time.perf_counter()
    manifest = build_ann_index(
        folder,
        ids,
        embeddings,
        "ivf",
        queries,
        None,
        extra={"version": 1, "output_bias": 0.1, "user_dim": USER_DIM},
    )
    build_s = time.perf_counter() - started
    index = load_index(folder)
    recall = ann_recall(index, queries, embeddings)
    assert abs(recall - manifest["ann_recall"]) < 1e-9  # the manifest reports what we measure
    timed = queries_like(weights, 2000, seed=2)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.search_rows(timed[:50], 100)  # warm
        started = time.perf_counter()
        for row in timed[:500]:
            index.search_rows(row[None], 100)
        single_qps = 500 / (time.perf_counter() - started)
        sweep = {}
        default_nprobe = index.nprobe
        for nprobe in sorted({*NPROBE_SWEEP, default_nprobe}):
            index.nprobe = nprobe
            started = time.perf_counter()
            index.search_rows(timed, 100)
            qps = len(timed) / (time.perf_counter() - started)
            sweep[nprobe] = (ann_recall(index, queries, embeddings), qps)
        index.nprobe = default_nprobe
    finally:
        faiss.omp_set_num_threads(threads)
    return {
        "build_s": build_s,
        "recall_at_100": recall,
        "nlist": manifest["params"]["nlist"],
        "nprobe": default_nprobe,
        "qps_one_thread_batch": sweep[default_nprobe][1],
        "qps_one_thread_single": single_qps,
        "sweep": sweep,
    }


def write_stand_in_towers(serving: Path, weights: np.ndarray) -> float:
    """User and item towers with the pushed towers' signatures, as version 1; returns b."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    bias = 0.1
    kernel_u = tf.Variable(rng.standard_normal((USER_DIM, DIM)).astype(np.float32) / 11)
    kernel_i = tf.Variable(rng.standard_normal((ITEM_DIM, DIM)).astype(np.float32) / 11)
    w = tf.Variable(weights.reshape(1, -1))
    b = tf.Variable([bias], dtype=tf.float32)

    user = tf.Module()
    user.k, user.w, user.b = kernel_u, w, b

    @tf.function(input_signature=[tf.TensorSpec([None, USER_DIM], tf.float32, name="user_vector")])
    def serve_user(user_vector):
        embedding = tf.nn.relu(user_vector @ user.k)
        return {
            "user_embedding": embedding,
            "query": embedding * user.w,
            "bias": tf.fill([tf.shape(embedding)[0], 1], user.b[0]),
        }

    item = tf.Module()
    item.k = kernel_i

    @tf.function(input_signature=[tf.TensorSpec([None, ITEM_DIM], tf.float32, name="item_vector")])
    def serve_item(item_vector):
        return {"item_embedding": tf.nn.relu(item_vector @ item.k)}

    tf.saved_model.save(user, str(serving / "user_tower" / "1"), {"serving_default": serve_user})
    tf.saved_model.save(item, str(serving / "item_tower" / "1"), {"serving_default": serve_item})
    from components.pusher.serving_layout import write_models_config

    write_models_config(str(serving))
    return bias


def write_item_embeddings(folder: Path, ids: list[str], embeddings: np.ndarray) -> None:
    from components.item_embeddings.embeddings import write_embeddings

    folder.mkdir(parents=True)
    write_embeddings(str(folder / "embeddings.parquet"), [(np.asarray(ids, object), embeddings)])
    (folder / "manifest.json").write_text(json.dumps({"version": 1, "count": len(ids)}))


def _wait(predicate, timeout_s: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s} s")
        time.sleep(0.1)


async def fixed_rate(
    host: str, port: int, bodies: list[bytes], rate: float, seconds: float, connections: int = 64
) -> dict:
    """Send `POST /recall` at `rate`/s for `seconds` over keep-alive connections (open loop:
    request i is due at i / rate; latency counts from then, so a backlog shows in it).

    Raw HTTP/1.1 on asyncio streams: an HTTP client library would cost more CPU than the
    service on a small machine and limit the rate it can offer."""
    count = int(rate * seconds)
    requests = [
        b"POST /recall HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
        for body in bodies
    ]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_request = 0
    start = time.perf_counter() + 0.2
    give_up = start + 1.5 * seconds + 1  # a service that cannot keep up: stop sending

    async def connection() -> None:
        nonlocal next_request
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_request < count and time.perf_counter() < give_up:
                i, next_request = next_request, next_request + 1
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(requests[i % len(requests)])
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.wait_for(
        asyncio.gather(*(connection() for _ in range(connections))), timeout=seconds * 20 + 60
    )
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    sent = len(latencies)
    return {
        "rate": rate,
        "requests": count,
        "sent": sent,
        "achieved_rps": sent / elapsed,
        "errors": sent - statuses.get(200, 0),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def run_wrk(url: str, body: bytes, workdir: Path, seconds: int) -> str | None:
    if shutil.which("wrk") is None:
        return None
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    done = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    return done.stdout


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def bench_service(
    workdir: Path,
    out: Path,
    rates: list[float],
    seconds: float,
    repeats: int = 1,
    code_dir: Path = REPO,
) -> dict:
    import httpx

    from serving.client import UserTowerClient
    from tests.redis_server import free_port

    grpc_port, http_port = free_port(), free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(code_dir)}
    log = (workdir / "servers.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.model_server", "--port", str(grpc_port),
         "--bind_address", "127.0.0.1",
         "--model_config_file", str(out / "serving" / "models.config")],
        cwd=code_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    service = None
    try:
        with UserTowerClient(f"127.0.0.1:{grpc_port}", timeout_s=2.0) as probe:
            probe.wait_until_available(120, version=1)
        launched = time.perf_counter()
        service = subprocess.Popen(
            [sys.executable, "-m", "serving.recall", "--serving_dir", str(out / "serving"),
             "--output_dir", str(out), "--tf_serving", f"127.0.0.1:{grpc_port}",
             "--port", str(http_port), "--log_level", "warning"],
            cwd=code_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{http_port}"

        def health() -> int | None:
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code
            except httpx.HTTPError:
                return None

        _wait(lambda: health() is not None, 180, "the recall service does not answer", service)
        answers_s = time.perf_counter() - launched
        _wait(lambda: health() == 200, 180, "the recall service is not ready", service)
        cold = {"answers_s": answers_s, "ready_s": time.perf_counter() - launched}
        rng = np.random.default_rng(4)
        bodies = [
            json.dumps({"user_vector": rng.standard_normal(USER_DIM).tolist(), "n": 100}).encode()
            for _ in range(64)
        ]
        asyncio.run(fixed_rate("127.0.0.1", http_port, bodies, 50, 1.0))  # warm
        cold["memory_ready"] = memory_mb(service.pid)
        results: dict = {"cold": cold}
        for rate in rates:
            results[f"{int(rate)}"] = [
                asyncio.run(fixed_rate("127.0.0.1", http_port, bodies, rate, seconds))
                for _ in range(repeats)
            ]
        cold["memory_after_load"] = memory_mb(service.pid)
        results["wrk"] = run_wrk(f"{base}/recall", bodies[0], workdir, int(max(5, seconds)))
        return results
    finally:
        for process in (service, server):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _span(values: list[float], unit: str, digits: int = 1) -> str:
    low, high = min(values), max(values)
    if round(low, digits) == round(high, digits):
        return f"{low:.{digits}f} {unit}"
    return f"{low:.{digits}f}-{high:.{digits}f} {unit}"


def report_service(served: dict, rates: list[float], items: int, code_dir: Path) -> None:
    cold = served["cold"]
    memory, loaded = cold["memory_ready"], cold["memory_after_load"]
    print(
        f"recall service ({code_dir}): port answers {cold['answers_s']:.1f} s after start, "
        f"ready {cold['ready_s']:.1f} s; RSS {memory['VmRSS']:.0f} MB when ready, "
        f"{loaded['VmRSS']:.0f} MB after the load (peak {loaded['VmHWM']:.0f} MB)"
    )
    for rate in rates:
        runs = served[f"{int(rate)}"]
        sent = sum(r["sent"] for r in runs)
        asked = sum(r["requests"] for r in runs)
        print(
            f"/recall at {rate:,.0f} req/s (n=100, {items:,} items, {len(runs)} runs): p50 "
            f"{_span([r['p50_ms'] for r in runs], 'ms')}, p99 "
            f"{_span([r['p99_ms'] for r in runs], 'ms')}; achieved "
            f"{_span([r['achieved_rps'] for r in runs], 'req/s', 0)}, "
            f"{sum(r['errors'] for r in runs)} errors of {sent:,} sent"
            + (
                f" ({asked - sent:,} never sent: the machine could not keep up)"
                if sent < asked
                else ""
            )
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per fixed request rate")
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 1000.0])
    parser.add_argument("--skip_service", action="store_true", help="only Redis and faiss")
    parser.add_argument("--skip_publish", action="store_true", help="no Redis publish figure")
    parser.add_argument("--repeats", type=int, default=2, help="runs per rate (ranges)")
    parser.add_argument(
        "--code_dir", type=Path, default=REPO, help="checkout the servers run from (before/after)"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench_recall."))
    try:
        print(f"items {args.items:,}, cores {os.cpu_count()}, work dir {workdir}")
        embeddings, vectors, weights = synthetic_items(args.items)
        ids = [f"item-{i}" for i in range(args.items)]

        if not args.skip_publish:
            published = bench_publish(ids, embeddings, vectors, workdir)
            ratio = published["items_per_s"] / TARGET_PUBLISH
            print(
                f"redis publish: {published['items']:,} items in {published['seconds']:.1f} s "
                f"= {published['items_per_s']:,.0f} items/s ({ratio:.2f}x the 100k/s target)"
            )
        del vectors

        out = workdir / "out"
        ivf = bench_ivf(ids, embeddings, weights, out / "ann_index" / "1")
        print(
            f"faiss ivf as published (nlist {ivf['nlist']}, nprobe {ivf['nprobe']}, built in "
            f"{ivf['build_s']:.1f} s): recall@100 {ivf['recall_at_100']:.4f} "
            f"({ivf['recall_at_100'] / TARGET_RECALL:.3f}x 0.95); one thread "
            f"{ivf['qps_one_thread_batch']:,.0f} q/s batched "
            f"({ivf['qps_one_thread_batch'] / TARGET_QPS:.2f}x 2,000), "
            f"{ivf['qps_one_thread_single']:,.0f} q/s one query a call "
            f"({ivf['qps_one_thread_single'] / TARGET_QPS:.2f}x)"
        )
        for nprobe, (recall, qps) in ivf["sweep"].items():
            both = recall >= TARGET_RECALL and qps >= TARGET_QPS
            print(
                f"  nprobe {nprobe:>4}: recall@100 {recall:.4f}, {qps:,.0f} q/s one thread "
                f"batched{'  <- meets both targets' if both else ''}"
            )
        if args.skip_service:
            return
        write_item_embeddings(out / "item_embeddings" / "1", ids, embeddings)
        del embeddings
        write_stand_in_towers(out / "serving", weights)
        served = bench_service(
            workdir, out, args.rates, args.seconds, args.repeats, args.code_dir.resolve()
        )
        report_service(served, args.rates, args.items, args.code_dir)
        if served["wrk"]:
            print("wrk -t1 -c16 (closed loop, the service's maximum):")
            print("\n".join("  " + line for line in served["wrk"].strip().splitlines()))
        else:
            print("wrk is not installed: no closed-loop figure")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
