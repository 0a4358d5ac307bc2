"""Retrieval speed: item export, index build, one-thread queries/s and recall@100, evaluation.

    .venv/bin/python benchmarks/bench_index.py            # 1,000,000 items x 64-d
    .venv/bin/python benchmarks/bench_index.py --quick    # 100,000 items

Data resembles folded two-tower outputs: items relu(cluster centre + noise) scaled by a
log-normal "popularity" norm; queries w ⊙ relu(mix of 1-3 interest centres + noise).
Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from finetower.evaluate import DotScorer, ranking_metrics
from finetower.export import item_embeddings
from finetower.index import make_index
from finetower.model import TwoTowerModel

K = 100


def folded_like(n_items: int, n_queries: int, dim: int = 64, clusters: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    items = np.empty((n_items, dim), np.float32)
    for start in range(0, n_items, 200_000):  # bounded temporaries
        n = min(200_000, n_items - start)
        block = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
        items[start : start + n] = np.maximum(block, 0) * rng.lognormal(0, 0.3, size=(n, 1))
    interests = rng.integers(0, clusters, size=(n_queries, 3))
    mix = rng.dirichlet(np.ones(3), size=n_queries)[:, :, None]
    noise = 0.5 * rng.normal(size=(n_queries, dim))
    users = np.maximum((centres[interests] * mix).sum(1) + noise, 0)
    return items, (users * rng.normal(1.0, 0.5, size=dim)).astype(np.float32)


def tower_folded(n_items: int, n_queries: int, seed: int = 0):
    """Real folded two-tower embeddings: the recipe trained on a synthetic world, its item
    tower over `n_items` vectors drawn around mixes of the pretrained item2vec vectors, its folded
    user side over means of 5 random items (what a history gives)."""
    import tempfile

    import pyarrow.parquet as pq

    from finetower.datasets import synthetic_world
    from finetower.export import folded_queries, item_embeddings
    from finetower.pretrain import PretrainConfig, pretrain
    from finetower.samples import SampleConfig, build_samples
    from finetower.train import TrainConfig, train
    from finetower.vectors import read_vectors

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = synthetic_world(seed=seed)
        pq.write_table(world.source, root / "source.parquet")
        pq.write_table(world.target, root / "target.parquet")
        pretrain(root / "source.parquet", root / "vectors", PretrainConfig(seed=seed))
        build_samples(
            root / "target.parquet",
            root / "vectors",
            root / "samples",
            config=SampleConfig(text=False, seed=seed),
        )
        model = train(
            root / "samples" / "train",
            root / "run",
            config=TrainConfig(epochs=2, seed=seed),
            progress=False,
        ).model
        pretrained = read_vectors(root / "vectors" / "item_vectors.bin").vectors
    rng = np.random.default_rng(seed)
    scale = 0.3 * pretrained.std()
    items = np.empty((n_items, model.config.embedding_dim), np.float32)
    for start in range(0, n_items, 200_000):  # bounded temporaries
        n = min(200_000, n_items - start)
        # a catalogue larger than the world's: each item near a random mix of 3 pretrained
        # items (so 1M items spread out instead of piling onto 1,000 near-duplicates)
        mix = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
        drawn = np.einsum("nk,nkd->nd", mix, pretrained[rng.integers(0, len(pretrained), (n, 3))])
        items[start : start + n] = item_embeddings(
            model, drawn + scale * rng.normal(size=drawn.shape)
        )
    histories = pretrained[rng.integers(0, len(pretrained), (n_queries, 5))].mean(1)
    return items, folded_queries(model, histories.astype(np.float32))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    offset = np.arange(len(exact), dtype=np.int64)[:, None] * (exact.max() + 2)
    return float(np.isin(found + offset, exact + offset).sum()) / exact.size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100k items, fewer queries")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--eval-users", type=int, default=None)
    parser.add_argument(
        "--backends",
        default="flat,hnsw,hnsw-ip,ivf",
        help="comma-separated: flat, hnsw (default metric), hnsw-ip, ivf",
    )
    parser.add_argument(
        "--data",
        choices=("folded", "clusters"),
        default="folded",
        help="folded: a trained recipe's item tower and folded queries (default); "
        "clusters: synthetic clustered vectors with log-normal norms",
    )
    args = parser.parse_args()
    n_items = args.items or (100_000 if args.quick else 1_000_000)
    n_queries = args.queries or (500 if args.quick else 1000)
    eval_users = args.eval_users or (20_000 if args.quick else 100_000)
    threads = faiss.omp_get_max_threads()
    print(f"items {n_items:,} x 64, queries {n_queries:,}, build threads {threads}, k {K}")

    # item export: the default item tower over 128-d pretrained vectors
    model = TwoTowerModel().eval()
    inputs = np.random.default_rng(1).normal(size=(min(n_items, 1_000_000), 128))
    inputs = inputs.astype(np.float32)
    torch.set_num_threads(threads)
    _, seconds = timed(item_embeddings, model, inputs)
    print(
        f"item export: {len(inputs) / seconds:,.0f} rows/s ({len(inputs):,} rows, {seconds:.2f}s)"
    )
    del inputs

    if args.data == "folded":
        items, queries = tower_folded(n_items, n_queries)
    else:
        items, queries = folded_like(n_items, n_queries)
    norms = np.linalg.norm(items, axis=1)
    print(
        f"data: {args.data}; item norms p1/p50/p99 "
        + "/".join(f"{v:.2f}" for v in np.percentile(norms, [1, 50, 99]))
    )

    # brute force, one thread
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    items_t = torch.from_numpy(items)
    q_t = torch.from_numpy(queries)

    def torch_topk():
        rows = []
        for start in range(0, n_queries, 64):
            rows.append(torch.topk(q_t[start : start + 64] @ items_t.T, K).indices.numpy())
        return np.concatenate(rows)

    exact, torch_s = timed(torch_topk)
    torch_qps = n_queries / torch_s
    print(f"torch mm+topk (1 thread): {torch_qps:,.0f} q/s")
    n_numpy = min(n_queries, 200)

    def numpy_topk():
        scores = queries[:n_numpy] @ items.T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        return np.take_along_axis(part, order, 1)

    _, numpy_s = timed(numpy_topk)
    print(f"numpy matmul+argpartition (1 thread): {n_numpy / numpy_s:,.0f} q/s")

    results = []
    known = {
        "flat": ("flat", {}),
        "hnsw": ("hnsw", {}),
        "hnsw-ip": ("hnsw", {"metric": "ip"}),
        "ivf": ("ivf", {}),
    }
    configs = [known[name] for name in args.backends.split(",")]
    for backend, params in configs:
        faiss.omp_set_num_threads(threads)
        index, build_s = timed(make_index(backend, **params).build, items)
        faiss.omp_set_num_threads(1)
        (rows, _), search_s = timed(index.search_rows, queries, K)
        recall = recall_at(rows, exact)
        qps = n_queries / search_s
        label = f"{backend} {index.params}"
        results.append((label, build_s, qps, recall))
        print(
            f"{label}: build {build_s:.1f}s, {qps:,.0f} q/s (1 thread), recall@{K} {recall:.4f}, "
            f"{qps / torch_qps:.1f}x torch brute force",
            flush=True,
        )
        # the speed/recall trade-off of each approximate backend's search knob
        sweep = {"hnsw": ("ef_search", (64, 128, 512)), "ivf": ("nprobe", (16, 24, 32, 48, 64))}
        knob, values = sweep.get(backend, (None, ()))
        for value in values:
            setattr(index, knob, value)
            (rows, _), search_s = timed(index.search_rows, queries, K)
            print(
                f"    {knob} {value}: {n_queries / search_s:,.0f} q/s, "
                f"recall@{K} {recall_at(rows, exact):.4f}",
                flush=True,
            )
        del index

    # full-catalogue evaluation: eval_users x 100k items, 5 test items a user
    torch.set_num_threads(threads)
    n_catalogue = min(100_000, n_items)
    rng = np.random.default_rng(2)
    _, user_queries = folded_like(n_catalogue, eval_users, seed=3)
    scorer = DotScorer(user_queries, items[:n_catalogue])
    test_users = np.repeat(np.arange(eval_users), 5)
    train_users = np.repeat(np.arange(eval_users), 20)
    _, eval_s = timed(
        ranking_metrics,
        scorer,
        test_users,
        rng.integers(0, n_catalogue, len(test_users)),
        train_users,
        rng.integers(0, n_catalogue, len(train_users)),
        [10, 20, 50, 100],
    )
    print(
        f"full-catalogue evaluation: {eval_users:,} users x {n_catalogue:,} items in "
        f"{eval_s:.1f}s ({eval_users / eval_s:,.0f} users/s, {threads} threads)"
    )


if __name__ == "__main__":
    main()
