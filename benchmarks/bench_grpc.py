"""The user tower over gRPC (serving.client against the local model server, and a real
tensorflow_model_server where one is on PATH) against the same SavedModel called in-process.
Prints figures and ratios measured in this run; asserts nothing.

    python benchmarks/bench_grpc.py                        # builds towers with a small pipeline
    python benchmarks/bench_grpc.py --serving_dir DIR/serving --rounds 5 --calls 500

Measured per round, for 1 user and a batch of 64: p50 and p99 latency of `embed` (request
encoding, the RPC, decoding into numpy) and of the serving signature called in this process
(outputs read back as numpy), and their ratio; REST predict p50 for reference; then the range
over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

BATCHES = (1, 64)


def build_towers(workdir: Path) -> Path:
    """A small pipeline run (2,000 rows) that pushes version 1 of both towers."""
    from tests.pipeline_helpers import run_local_runner, small_recipe_files

    data = small_recipe_files(workdir / "data", rows=2000, items=200)
    done = run_local_runner(
        "--train_data",
        str(data["train"]),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(workdir / "out"),
    )
    if done.returncode != 0:
        sys.exit(f"the pipeline run failed:\n{done.stderr[-3000:]}")
    return workdir / "out" / "serving"


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(call, calls: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def rest_predict(url: str, body: bytes):
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def bench_server(label, process, signature, users, rounds, calls, warmup) -> list[dict]:
    import tensorflow as tf

    from serving.client import UserTowerClient

    results = []
    with process, UserTowerClient(process.grpc_target, timeout_s=10) as client:
        for round_ in range(1, rounds + 1):
            for batch in BATCHES:
                x = users[:batch]
                x_tensor = tf.constant(x)
                grpc_p50, grpc_p99 = timed(lambda x=x: client.embed(x), calls, warmup)
                local_p50, local_p99 = timed(
                    lambda t=x_tensor: {k: v.numpy() for k, v in signature(user_vector=t).items()},
                    calls,
                    warmup,
                )
                body = json.dumps({"instances": x.tolist()}).encode()
                url = f"{process.rest_url}/v1/models/user_tower:predict"
                rest_p50, _ = timed(lambda b=body, u=url: rest_predict(u, b), calls // 3, warmup)
                row = {
                    "server": label,
                    "round": round_,
                    "batch": batch,
                    "grpc_p50": grpc_p50,
                    "grpc_p99": grpc_p99,
                    "local_p50": local_p50,
                    "local_p99": local_p99,
                    "rest_p50": rest_p50,
                    "ratio_p50": grpc_p50 / local_p50,
                    "ratio_p99": grpc_p99 / local_p99,
                }
                results.append(row)
                print(
                    f"{label:24s} round {round_} batch {batch:3d}: gRPC p50 {grpc_p50:6.2f} ms "
                    f"p99 {grpc_p99:6.2f} | in-process p50 {local_p50:6.2f} p99 {local_p99:6.2f}"
                    f" | gRPC/in-process p50 {row['ratio_p50']:4.1f}x p99 {row['ratio_p99']:4.1f}x"
                    f" | REST p50 {rest_p50:6.2f} ms",
                    flush=True,
                )
    return results


def summarize(results: list[dict]) -> None:
    print("\nrange over rounds (min - max)")
    for server in dict.fromkeys(r["server"] for r in results):
        for batch in BATCHES:
            rows = [r for r in results if r["server"] == server and r["batch"] == batch]
            parts = []
            for key, unit in (
                ("grpc_p50", " ms"),
                ("grpc_p99", " ms"),
                ("local_p50", " ms"),
                ("ratio_p50", "x"),
                ("ratio_p99", "x"),
                ("rest_p50", " ms"),
            ):
                values = [r[key] for r in rows]
                parts.append(f"{key} {min(values):.2f}-{max(values):.2f}{unit}")
            print(f"  {server:24s} batch {batch:3d}: " + ", ".join(parts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serving_dir", help="a pushed serving dir (default: build one)")
    parser.add_argument("--workdir", help="where to build towers and write logs (default: tmp)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per figure")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_grpc_"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    serving_dir = Path(args.serving_dir) if args.serving_dir else build_towers(workdir)
    if not args.serving_dir:
        print(f"built towers in {time.perf_counter() - started:.0f} s: {serving_dir}")

    import tensorflow as tf
    from google.protobuf import text_format

    from components.pusher.serving_layout import models_config, versions
    from serving.model_server.process import ModelServerProcess, real_binary

    # our own config over the towers, whatever base paths the pushed models.config names
    config_path = workdir / "bench_models.config"
    config_path.write_text(text_format.MessageToString(models_config(str(serving_dir))))
    version = versions(str(serving_dir / "user_tower"))[-1]
    loaded = tf.saved_model.load(str(serving_dir / "user_tower" / str(version)))
    signature = loaded.signatures["serving_default"]
    users = np.random.default_rng(args.seed).normal(size=(max(BATCHES), 128)).astype(np.float32)
    print(f"user tower version {version}; {args.rounds} rounds x {args.calls} calls per figure")

    servers = [
        ("serving.model_server", ModelServerProcess(config_path, log_path=workdir / "ms.log"))
    ]
    binary = real_binary()
    if binary:
        servers.append(
            (
                "tensorflow_model_server",
                ModelServerProcess(config_path, binary=binary, log_path=workdir / "tfs.log"),
            )
        )
    else:
        print("tensorflow_model_server is not on PATH: the stand-in only")
    results = []
    for label, process in servers:
        results += bench_server(
            label, process, signature, users, args.rounds, args.calls, args.warmup
        )
    summarize(results)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; logs in {workdir}")


if __name__ == "__main__":
    main()
