"""The whole pipeline against a stock TFX pipeline of the same shape and the recipe's own
script, on the same files. Prints figures and ratios measured in this run; asserts nothing.

    python benchmarks/bench_pipeline.py                       # 200,000 train + 50,000 eval rows
    python benchmarks/bench_pipeline.py --rows 40000 --skip-stock --workdir /tmp/ftbench
    python benchmarks/bench_pipeline.py --growth 125000,500000    # peak memory as data grows

Measured: each component's wall time (from ML Metadata), ExampleGen rows/s, the Trainer's
training throughput against a bare tf_keras fit of the same model on in-memory arrays at the
same batch size, peak RSS of each pipeline process, and val AUC of each way of training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv  # noqa: E402


def make_data(workdir: Path, rows: int, items: int) -> dict[str, Path]:
    paths = {"train": workdir / "data/train/train.csv", "eval": workdir / "data/eval/eval.csv"}
    if not all(p.exists() for p in paths.values()):
        labels, users, item_rows, _ = demo_samples(DemoData(rows=rows, items=items, seed=7))
        cut = rows * 4 // 5
        write_recipe_csv(paths["train"], labels[:cut], users[:cut], item_rows[:cut])
        write_recipe_csv(paths["eval"], labels[cut:], users[cut:], item_rows[cut:])
    return paths


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recipe_script(paths: dict[str, Path]) -> dict:
    """The recipe's script as published: a per-line Python parser feeding fit(generator)."""
    import tf_keras as keras

    from components.trainer.model import build_dssm

    def lines(path):
        with open(path) as f:
            for line in f:
                values = line.strip().split(",")
                yield (
                    int(float(values[0])),
                    [float(x) for x in values[1:129]],
                    [float(x) for x in values[129:]],
                )

    def batches(path, batch_size=128, repeat=True):
        while True:
            users, items, labels = [], [], []
            for label, u, i in lines(path):
                labels.append(label), users.append(u), items.append(i)
                if len(labels) == batch_size:
                    yield (np.array(users), np.array(items)), np.array(labels)
                    users, items, labels = [], [], []
            if labels:
                yield (np.array(users), np.array(items)), np.array(labels)
            if not repeat:
                return

    def count_lines(path, block=8 << 20):  # steps per epoch, as `wc -l` counts (no parsing)
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(block), b""))

    n_train, n_eval = count_lines(paths["train"]), count_lines(paths["eval"])
    keras.utils.set_random_seed(0)
    model = build_dssm()
    started = time.perf_counter()
    model.fit(
        batches(paths["train"]),
        steps_per_epoch=-(-n_train // 128),
        validation_data=batches(paths["eval"], 4096),
        validation_steps=-(-n_eval // 4096),
        epochs=2,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)],
    )
    # scoring the eval file batch by batch (a list of its rows as Python floats would take
    # ~13 GB at the seed's 1.58M lines)
    labels, scores = [], []
    for (users, items), batch_labels in batches(paths["eval"], 4096, repeat=False):
        labels.append(batch_labels)
        scores.append(model.predict_on_batch([users, items])[:, 0])
    labels, scores = np.concatenate(labels), np.concatenate(scores)
    return {"seconds": time.perf_counter() - started, "val_auc": auc(labels, scores)}


def bare_keras(paths: dict[str, Path], batch_size: int = 128) -> dict:
    """The framework's limit: the same model on in-memory numpy arrays, pre-shuffled, fit as
    Keras does by default (a Python round trip a batch: `samples_per_second`) and with the
    Trainer's `steps_per_execution` (`samples_per_second_as_trainer`)."""
    import pyarrow.csv as pacsv
    import tf_keras as keras

    from components.trainer.model import build_dssm
    from pipeline.configs import TrainerConfig

    def read(path):
        table = pacsv.read_csv(path, pacsv.ReadOptions(autogenerate_column_names=True))
        rows = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
        return rows[:, 0], rows[:, 1:129], rows[:, 129:]

    labels, users, items = read(paths["train"])
    rates = {}
    for steps in (1, TrainerConfig().steps_per_execution):
        keras.utils.set_random_seed(0)
        model = build_dssm(steps_per_execution=steps)
        best = 0.0
        for _ in range(2):  # two epochs, each timed; the faster counts (the first warms up)
            started = time.perf_counter()
            model.fit(
                [users, items], labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0
            )
            best = max(best, len(labels) / (time.perf_counter() - started))
        rates[steps] = best
    e_labels, e_users, e_items = read(paths["eval"])
    scores = model.predict([e_users, e_items], batch_size=4096, verbose=0)[:, 0]
    return {
        "samples_per_second": rates[1],
        "samples_per_second_as_trainer": rates[TrainerConfig().steps_per_execution],
        "val_auc": auc(e_labels, scores),
    }


def component_seconds(metadata_path: Path) -> dict[str, float]:
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
                seconds = (
                    execution.last_update_time_since_epoch - execution.create_time_since_epoch
                ) / 1000
                out[nodes[ctx.id]] = seconds
    return out


def run_process(
    command: list[str], env: dict | None = None
) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS in GB of the child, result)."""
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # max over children so far
    if result.returncode != 0:
        print(result.stderr[-3000:])
        raise SystemExit(f"{command[:3]} failed")
    return seconds, peak, result


def ours(paths: dict[str, Path], out: Path) -> dict:
    seconds, peak, result = run_process(
        [
            sys.executable,
            "-m",
            "pipeline.local_runner",
            "--train_data",
            str(paths["train"]),
            "--val_data",
            str(paths["eval"]),
            "--output_dir",
            str(out),
        ]
    )
    info = json.loads(
        next((out / "tfx" / "Trainer" / "model").glob("*/finetower_model.json")).read_text()
    )
    return {
        "seconds": seconds,
        "peak_gb": peak,
        "components": component_seconds(out / "metadata.sqlite"),
        "train_samples_per_second": info["training_samples_per_second"],
        "val_auc": info["history"]["val_auc"][-1],
        "summary": result.stdout.strip(),
    }


def stock(paths: dict[str, Path], workdir: Path) -> dict:
    from benchmarks.stock_module import header

    base = workdir / "stock_data"
    for split in ("train", "eval"):
        target = base / split / f"{split}.csv"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w") as out, open(paths[split]) as src:
                out.write(header() + "\n")
                for block in iter(lambda: src.read(1 << 24), ""):
                    out.write(block)
    out = workdir / "stock_out"
    seconds, peak, _ = run_process(
        [
            sys.executable,
            "-m",
            "benchmarks.stock_pipeline",
            "--data",
            str(base),
            "--output_dir",
            str(out),
        ]
    )
    return {
        "seconds": seconds,
        "peak_gb": peak,
        "components": component_seconds(out / "metadata.sqlite"),
    }


def growth(workdir: Path, sizes: list[int], items: int) -> None:
    """Peak RSS of our pipeline at each size, each in a fresh process (ru_maxrss is a max)."""
    measured = []
    for rows in sizes:
        result = subprocess.run(
            [sys.executable, __file__, "--rows", str(rows), "--items", str(items), "--only-ours"]
            + ["--workdir", str(workdir / f"growth-{rows}")],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in result.stdout.splitlines() if x.startswith("finetower pipeline:"))
        seconds = float(line.split(":")[1].split(" s wall")[0])
        peak = float(line.split("peak RSS ")[1].split(" GB")[0])
        measured.append((rows, seconds, peak))
        print(f"{rows:>9,} rows: {seconds:6.1f} s wall, peak RSS {peak:.2f} GB", flush=True)
    (small_rows, _, small_peak), (big_rows, _, big_peak) = measured[0], measured[-1]
    print(
        f"rows x{big_rows / small_rows:.1f} -> peak RSS x{big_peak / small_peak:.2f} "
        f"({(big_peak - small_peak) * 1e3 / ((big_rows - small_rows) / 1e5):+.0f} MB per 100k rows)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=250_000, help="train + eval rows (4:1)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--workdir", default="/tmp/finetower-bench")
    parser.add_argument(
        "--skip-stock", action="store_true", help="skip the stock pipeline (~12 min)"
    )
    parser.add_argument("--only-ours", action="store_true", help="only the finetower pipeline")
    parser.add_argument(
        "--growth",
        help="comma-separated row counts: our pipeline alone at each (its own process), "
        "printing peak RSS and seconds per 100k rows",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.growth:
        growth(workdir, [int(n) for n in args.growth.split(",")], args.items)
        return
    paths = make_data(workdir, args.rows, args.items)
    size = sum(p.stat().st_size for p in paths.values()) / 1e6
    rows = args.rows
    print(f"data: {rows:,} rows ({rows * 4 // 5:,} train + {rows // 5:,} eval), {size:.0f} MB")

    import shutil

    shutil.rmtree(workdir / "ours_out", ignore_errors=True)
    ft = ours(paths, workdir / "ours_out")
    print(
        f"\nfinetower pipeline: {ft['seconds']:.1f} s wall, peak RSS {ft['peak_gb']:.2f} GB, "
        f"val AUC {ft['val_auc']:.4f}"
    )
    for name, seconds in ft["components"].items():
        print(f"  {name:32s} {seconds:7.1f} s")
    eg = ft["components"]["RecipeCsvExampleGen"]
    print(f"  ExampleGen {rows / eg:,.0f} rows/s ({size / eg:.1f} MB/s)")

    if args.only_ours:
        return
    bare = bare_keras(paths)
    ratio = ft["train_samples_per_second"] / bare["samples_per_second"]
    print(
        f"\nTrainer {ft['train_samples_per_second']:,.0f} samples/s vs bare tf_keras fit on arrays "
        f"{bare['samples_per_second']:,.0f} samples/s (val AUC {bare['val_auc']:.4f}): "
        f"{ratio:.2f}x; "
        f"with the Trainer's steps_per_execution {bare['samples_per_second_as_trainer']:,.0f}: "
        f"{ft['train_samples_per_second'] / bare['samples_per_second_as_trainer']:.2f}x"
    )

    script = recipe_script(paths)
    print(
        f"recipe's script: {script['seconds']:.1f} s, val AUC {script['val_auc']:.4f}; "
        f"finetower pipeline / script: {ft['seconds'] / script['seconds']:.2f}x the time"
    )

    if not args.skip_stock:
        shutil.rmtree(workdir / "stock_out", ignore_errors=True)
        st = stock(paths, workdir)
        print(f"\nstock pipeline: {st['seconds']:.1f} s wall, peak RSS {st['peak_gb']:.2f} GB")
        for name, seconds in st["components"].items():
            print(f"  {name:32s} {seconds:7.1f} s")
        csv_eg = st["components"]["CsvExampleGen"]
        print(
            f"\nExampleGen: ours {rows / eg:,.0f} rows/s vs CsvExampleGen "
            f"{rows / csv_eg:,.0f}: {csv_eg / eg:.1f}x"
        )
        print(f"whole pipeline: {st['seconds'] / ft['seconds']:.1f}x faster than stock")


if __name__ == "__main__":
    main()
