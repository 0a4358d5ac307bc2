"""The seed's own scale: the whole pipeline (ExampleGen through the published ANN index)
against the recipe's script on the same files, with memory of every process sampled.

    python benchmarks/bench_seed_scale.py                  # 4,740,352 + 1,579,904 lines, 1M items
    python benchmarks/bench_seed_scale.py --scale 0.02     # the same shape, 2% of it
    python benchmarks/bench_seed_scale.py --sizes 0.01,0.02,0.04   # fixed vs per-line cost

The data set is made by a seeded generator (chunks seeded by index: a smaller --scale is a
prefix of a bigger one's lines) and kept in --data_dir; generation is timed apart. Measured in
one run, on one machine: wall time of the pipeline and of the recipe's script (its per-line
generator + fit, 2 epochs, validation each epoch, then scoring the eval file), their ratio,
peak RSS summed over each one's process tree, the Trainer's streaming throughput against a
bare tf_keras fit on in-memory arrays at batch 128, eval AUC of both, and per component (ML
Metadata's execution times) its seconds, lines/s and the peak RSS sampled while it ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

# the recipe's training log: 37,034 train and 12,343 validation steps of batch 128 an epoch
SEED_TRAIN, SEED_EVAL, SEED_ITEMS = 37_034 * 128, 12_343 * 128, 1_000_000
CHUNK = 32_768  # lines generated per seeded chunk
# what each component reads, in lines, as a function of (train, eval, items)
COMPONENT_LINES = {
    "RecipeCsvExampleGen": lambda t, e, i: t + e,
    "StatisticsGen": lambda t, e, i: t + e,
    "Transform": lambda t, e, i: t,
    "Trainer": lambda t, e, i: 2 * (t + e),
    "Evaluator": lambda t, e, i: e,
    "ItemEmbeddings": lambda t, e, i: i,
    "EmbeddingsPublisher": lambda t, e, i: i,
}


# --- data ------------------------------------------------------------------------------------


def _world(items: int, seed: int):
    """The hidden rule (pipeline/demo_data.py's shape) and a Zipf-popular catalogue."""
    from pipeline.demo_data import DemoData, _world

    rng, user_map, user_scale, user_offset, item_taste, vectors = _world(
        DemoData(items=items, seed=seed)
    )
    popularity = 1.0 / np.arange(1, items + 1)  # Zipf, s=1: item k drawn with p ~ 1/k
    cdf = np.cumsum(popularity / popularity.sum())
    return (user_map, user_scale, user_offset), item_taste, vectors, cdf


def _chunk(world, index: int, n: int, seed: int):
    (user_map, user_scale, user_offset), item_taste, vectors, cdf = world
    rng = np.random.default_rng([seed, index])
    taste = rng.normal(size=(n, item_taste.shape[1]))
    users = taste @ user_map + rng.normal(scale=0.5, size=(n, user_map.shape[1]))
    users = users / np.sqrt(taste.shape[1]) * user_scale + user_offset
    rows = np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)
    affinity = np.einsum("nd,nd->n", taste, item_taste[rows]) / np.sqrt(taste.shape[1])
    labels = (affinity + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return labels, users.astype(np.float32), vectors[rows]


def _write_lines(path: Path, world, first_chunk: int, lines: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(tmp), "wb") as sink:
        writer = None
        for k, start in enumerate(range(0, lines, CHUNK)):
            labels, users, items = _chunk(world, first_chunk + k, min(CHUNK, lines - start), seed)
            columns = [pa.array(labels)] + [pa.array(users[:, j]) for j in range(users.shape[1])]
            columns += [pa.array(items[:, j]) for j in range(items.shape[1])]
            table = pa.Table.from_arrays(columns, names=[f"f{j}" for j in range(len(columns))])
            writer = writer or pacsv.CSVWriter(sink, table.schema, write_options=options)
            writer.write_table(table)
        writer.close()
    tmp.replace(path)


def make_data(data_dir: Path, train: int, eval_: int, items: int, seed: int = 7) -> dict:
    """train/eval recipe CSVs and the items catalogue under data_dir (kept when present)."""
    from pipeline.demo_data import write_item_catalogue

    base = data_dir / f"seed{seed}-{train}-{eval_}-{items}"
    paths = {
        "train": base / "train/train.csv",
        "eval": base / "eval/eval.csv",
        "items": base / "items.csv",
    }
    started = time.perf_counter()
    if not all(p.exists() for p in paths.values()):
        world = _world(items, seed)
        base.mkdir(parents=True, exist_ok=True)
        write_item_catalogue(paths["items"], world[2])
        _write_lines(paths["train"], world, 0, train, seed)
        # eval chunks are numbered after every train chunk of the full size: disjoint lines
        _write_lines(paths["eval"], world, SEED_TRAIN // CHUNK + 1, eval_, seed)
    paths["generation_seconds"] = time.perf_counter() - started
    return paths


# --- measuring a process tree --------------------------------------------------------------


class TreeMemory:
    """Samples the summed RSS of a process and its descendants every `period` seconds."""

    def __init__(self, pid: int, period: float = 0.25):
        import psutil

        self._root, self._period = psutil.Process(pid), period
        self.samples: list[tuple[float, float]] = []  # (unix time, GB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                tree = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):  # ended since listed
                    total += process.memory_info().rss
            self.samples.append((time.time(), total / 1e9))
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> float:
        return max((gb for t, gb in self.samples if start <= t <= end), default=float("nan"))


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, TreeMemory, str]:
    """(wall seconds, memory samples, stdout) of `command`; its stderr on failure."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = TreeMemory(process.pid)
    out, err = process.communicate()
    memory.stop()
    if process.returncode != 0:
        print(err[-4000:])
        raise SystemExit(f"{' '.join(command[:4])} failed")
    return time.perf_counter() - started, memory, out


def executions(metadata_path: Path) -> dict[str, tuple[float, float]]:
    """component -> (start, end) unix seconds, from ML Metadata."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(metadata_path)
    store = metadata_store.MetadataStore(connection)
    nodes = {c.id: c.name.split(".")[-1] for c in store.get_contexts_by_type("node")}
    out = {}
    for execution in store.get_executions():
        for ctx in store.get_contexts_by_execution(execution.id):
            if ctx.id in nodes:
                out[nodes[ctx.id]] = (
                    execution.create_time_since_epoch / 1000,
                    execution.last_update_time_since_epoch / 1000,
                )
    return out


# --- the three ways of training --------------------------------------------------------------


def pipeline_run(paths: dict, out: Path, stream: bool, keep: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", str(out)]
    command += ["--train_data", str(paths["train"]), "--val_data", str(paths["eval"])]
    command += ["--items", str(paths["items"])]
    if stream:  # the streaming path the seed's size needs, at any --scale
        command += ["--train_in_memory_mb", "0"]
    seconds, memory, _ = run_measured(command)
    info = json.loads(next((out / "tfx/Trainer/model").glob("*/finetower_model.json")).read_text())
    spans = executions(out / "metadata.sqlite")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)  # GBs at full size
    return {
        "seconds": seconds,
        "peak_gb": memory.peak(),
        "components": {
            name: (end - start, memory.peak(start, end)) for name, (start, end) in spans.items()
        },
        "train_samples_per_second": info["training_samples_per_second"],
        "train_input": info["train_input"],
        "val_auc": info["history"]["val_auc"][-1],
    }


def part_script(train: str, eval_: str) -> dict:
    """The recipe's script (benchmarks/bench_pipeline.py), in this process."""
    from benchmarks.bench_pipeline import recipe_script

    return recipe_script({"train": Path(train), "eval": Path(eval_)})


def part_bare(train: str, eval_: str) -> dict:
    from benchmarks.bench_pipeline import bare_keras

    return bare_keras({"train": Path(train), "eval": Path(eval_)}, batch_size=128)


def measure_part(part: str, paths: dict) -> dict:
    command = [sys.executable, __file__, "--part", part, str(paths["train"]), str(paths["eval"])]
    seconds, memory, out = run_measured(command)
    return {**json.loads(out.strip().splitlines()[-1]), "wall": seconds, "peak_gb": memory.peak()}


# --- one size ---------------------------------------------------------------------------------


def one_size(args, scale: float) -> dict:
    train, eval_ = round(SEED_TRAIN * scale), round(SEED_EVAL * scale)
    items = args.items or max(20_000, round(SEED_ITEMS * scale))
    paths = make_data(Path(args.data_dir), args.rows or train, eval_, items)
    train = args.rows or train
    size_gb = sum(paths[k].stat().st_size for k in ("train", "eval")) / 1e9
    print(
        f"\n== scale {scale:g}: {train:,} train + {eval_:,} eval lines ({size_gb:.2f} GB), "
        f"{items:,} items; data {paths['generation_seconds']:.0f} s (generation, not measured)",
        flush=True,
    )
    out = Path(args.workdir) / f"pipeline_out-{scale:g}"
    ft = pipeline_run(paths, out, stream=not args.in_memory, keep=args.keep_output)
    print(f"pipeline: {ft['seconds']:.1f} s wall, peak RSS {ft['peak_gb']:.2f} GB (all processes)")
    print(f"  {'component':24s} {'seconds':>8s} {'lines/s':>10s} {'peak RSS GB':>12s}")
    for name, (seconds, peak) in sorted(ft["components"].items(), key=lambda kv: -kv[1][0]):
        count = COMPONENT_LINES.get(name, lambda *_: 0)(train, eval_, items)
        rate = f"{count / seconds:,.0f}" if count and seconds > 0 else "-"
        print(f"  {name:24s} {seconds:8.1f} {rate:>10s} {peak:12.2f}")
    result = {"scale": scale, "lines": train + eval_, "pipeline": ft}
    if args.skip_script:
        return result
    script = measure_part("script", paths)
    result["script"] = script
    print(
        f"recipe's script: {script['wall']:.1f} s wall (fit + scoring {script['seconds']:.1f} s), "
        f"peak RSS {script['peak_gb']:.2f} GB, eval AUC {script['val_auc']:.4f}"
    )
    print(
        f"pipeline / script: {ft['seconds'] / script['wall']:.2f}x the wall time; eval AUC "
        f"{ft['val_auc']:.4f} vs {script['val_auc']:.4f} "
        f"({ft['val_auc'] - script['val_auc']:+.4f})"
    )
    if not args.skip_bare and train <= args.bare_max_lines:  # its split must fit in memory
        bare = measure_part("bare", paths)
        result["bare"] = bare
        print(
            f"Trainer ({ft['train_input']}) {ft['train_samples_per_second']:,.0f} samples/s vs "
            f"bare tf_keras fit on arrays {bare['samples_per_second']:,.0f} at batch 128: "
            f"{ft['train_samples_per_second'] / bare['samples_per_second']:.2f}x (vs the bare "
            f"fit with the Trainer's steps_per_execution, "
            f"{bare['samples_per_second_as_trainer']:,.0f}: "
            f"{ft['train_samples_per_second'] / bare['samples_per_second_as_trainer']:.2f}x)"
        )
    return result


def fixed_and_per_line(results: list[dict]) -> None:
    """Least squares wall = fixed + per_line * lines, for the pipeline and the script."""
    lines = np.array([r["lines"] for r in results], dtype=float)
    # the bare fit's samples/s does not depend on the size: the best measured in this run
    bare = max((r["bare"]["samples_per_second"] for r in results if "bare" in r), default=np.nan)
    as_trainer = max(
        (r["bare"]["samples_per_second_as_trainer"] for r in results if "bare" in r),
        default=np.nan,
    )
    print(
        "\nsize         lines  pipeline s  peak GB  script s  ratio  Trainer samples/s  vs bare"
        "  vs bare (Trainer's steps/call)"
    )
    for r in results:
        script = r.get("script", {}).get("wall", float("nan"))
        ft = r["pipeline"]
        rate = ft["train_samples_per_second"]
        print(
            f"{r['scale']:<8g} {r['lines']:>9,} {ft['seconds']:11.1f} {ft['peak_gb']:8.2f} "
            f"{script:9.1f} {ft['seconds'] / script:6.2f} {rate:18,.0f} {rate / bare:8.2f}"
            f" {rate / as_trainer:32.2f}"
        )
    print(
        f"(bare tf_keras fit on in-memory arrays, batch 128: {bare:,.0f} samples/s one batch a "
        f"call, Keras' default; {as_trainer:,.0f} with the Trainer's steps_per_execution)"
    )
    if len(results) < 2:
        return
    for name, walls in (
        ("pipeline", [r["pipeline"]["seconds"] for r in results]),
        ("script", [r.get("script", {}).get("wall", np.nan) for r in results]),
    ):
        if np.isnan(walls).any():
            continue
        per_line, fixed = np.polyfit(lines, walls, 1)
        full = fixed + per_line * (SEED_TRAIN + SEED_EVAL)
        print(
            f"{name}: fixed {fixed:.1f} s + {per_line * 1e6:.1f} s per million lines "
            f"(projected at the seed's 6,320,256 lines: {full:,.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the seed's lines")
    parser.add_argument("--sizes", help="comma-separated scales, smallest first")
    parser.add_argument("--rows", type=int, help="train lines (default: the scale's)")
    parser.add_argument("--items", type=int, help="catalogue size (default: 1M x scale)")
    parser.add_argument("--data_dir", default="/work/bench-data")
    parser.add_argument("--workdir", default="/tmp/finetower-seed-scale")
    parser.add_argument("--skip-script", action="store_true")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument(
        "--bare-max-lines",
        type=int,
        default=2_000_000,
        help="run the bare in-memory fit at sizes up to this many train lines (its samples/s "
        "does not depend on the size; at 4.7M lines its arrays alone take 4.9 GB)",
    )
    parser.add_argument(
        "--in-memory", action="store_true", help="let the Trainer load a split that fits"
    )
    parser.add_argument("--keep-output", action="store_true", help="keep the pipeline's output")
    parser.add_argument("--part", choices=["script", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a child measured by its parent
        print(json.dumps((part_script if args.part == "script" else part_bare)(*args.files)))
        return
    scales = [float(s) for s in args.sizes.split(",")] if args.sizes else [args.scale]
    results = [one_size(args, scale) for scale in scales]
    fixed_and_per_line(results)
    if not args.keep_output:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
