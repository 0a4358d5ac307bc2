"""Core speed: text ingest, training throughput vs a bare PyTorch loop, end to end vs the
recipe's data path. Prints figures and ratios measured in the same run; asserts nothing.

    python benchmarks/bench_train.py            # 200,000 rows (~560 MB of text)
    python benchmarks/bench_train.py --rows 50000 --workdir /tmp/ftbench

Every throughput figure stands next to the validation AUC it reached: a batch size whose
learning rate no longer converges counts for nothing. The bare loops run the textbook
autograd step and finetower's written-out step on in-memory tensors; the ratio compares
finetower with the bare loop of the same step, so it measures the data path alone, and
the recipe's parser feeds finetower's step for the same reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
import torch.nn.functional as F

from finetower.artifacts import file_sha256
from finetower.dataset import convert_text
from finetower.fused_bce import fused_bce_step
from finetower.generate import write_generated_text
from finetower.metrics import roc_auc
from finetower.model import TwoTowerModel
from finetower.textformat import iter_text_chunks, read_text_samples
from finetower.train import TrainConfig, adam, auto_threads, train

THREADS = torch.get_num_threads()


def recipe_batches(path: Path, batch_size: int, user_dim: int = 128):
    """The recipe's data path as published: a Python generator parsing line by line."""
    with open(path) as f:
        users, items, labels = [], [], []
        for line in f:
            values = line.strip().split(",")
            labels.append(int(float(values[0])))
            users.append([float(x) for x in values[1 : 1 + user_dim]])
            items.append([float(x) for x in values[1 + user_dim :]])
            if len(labels) == batch_size:
                yield np.array(users), np.array(items), np.array(labels)
                users, items, labels = [], [], []
        if labels:
            yield np.array(users), np.array(items), np.array(labels)


def val_auc(model: TwoTowerModel, val) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(val.users), torch.from_numpy(val.items))
    return roc_auc(val.labels, logits.numpy())


def autograd_step(model, optimizer, users, items, labels) -> None:
    """The textbook PyTorch step."""
    loss = F.binary_cross_entropy_with_logits(model(users, items), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def finetower_step(model, optimizer, users, items, labels) -> None:
    """The step finetower's training takes for the recipe: gradients written out."""
    fused_bce_step(model, users, items, labels)
    optimizer.step()


def bare_loop(train_rows, val, batch_size: int, lr: float, step, epochs: int = 1):
    """The framework's limit: tensors already in memory, pre-shuffled, no bookkeeping,
    at the thread count finetower picks for that batch size (the faster one, measured)."""
    torch.set_num_threads(auto_threads(batch_size))
    torch.manual_seed(0)
    model = TwoTowerModel()
    optimizer = adam(model.parameters(), lr)
    users, items = torch.from_numpy(train_rows.users), torch.from_numpy(train_rows.items)
    labels = torch.from_numpy(train_rows.labels)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        u, i, y = users[order], items[order], labels[order]
        for s in range(0, len(y), batch_size):
            step(
                model,
                optimizer,
                u[s : s + batch_size],
                i[s : s + batch_size],
                y[s : s + batch_size],
            )
    seconds = time.perf_counter() - started
    torch.set_num_threads(THREADS)
    return epochs * len(labels) / seconds, val_auc(model, val)


def recipe_end_to_end(train_path: Path, val, epochs: int, batch_size: int = 128):
    """The recipe's parser feeding finetower's model and training step: the ratio to
    `finetower train` is the data path's alone."""
    torch.set_num_threads(auto_threads(batch_size))
    torch.manual_seed(0)
    model = TwoTowerModel()
    optimizer = adam(model.parameters(), 1e-3)
    started = time.perf_counter()
    for _ in range(epochs):
        for users, items, labels in recipe_batches(train_path, batch_size):
            finetower_step(
                model,
                optimizer,
                torch.from_numpy(users).float(),
                torch.from_numpy(items).float(),
                torch.from_numpy(labels).float(),
            )
    seconds = time.perf_counter() - started
    torch.set_num_threads(THREADS)
    return seconds, val_auc(model, val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--val-rows", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path(".bench/train"))
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    os.environ["FINETOWER_CACHE"] = str(work / "cache")
    train_txt, val_txt = work / f"train-{args.rows}.txt", work / f"val-{args.val_rows}.txt"
    if not train_txt.exists():
        write_generated_text(train_txt, args.rows, seed=1)
    if not val_txt.exists():
        write_generated_text(val_txt, args.val_rows, seed=2)
    val = read_text_samples(val_txt)
    size_mb = train_txt.stat().st_size / 1e6
    print(
        f"data: {args.rows:,} rows, {size_mb:,.0f} MB of text; torch threads "
        f"{torch.get_num_threads()}, cores {os.cpu_count()}"
    )

    # 1. ingest: the file is read once first, so every reader finds it in the page cache;
    # ours and pyarrow's bare reader alternate twice and the best of each counts
    file_sha256(train_txt)
    names = [f"c{i}" for i in range(257)]
    ingest = arrow_alone = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        rows = sum(len(chunk) for chunk in iter_text_chunks(train_txt))
        ingest = min(ingest, time.perf_counter() - started)
        started = time.perf_counter()
        pacsv.read_csv(
            train_txt,
            pacsv.ReadOptions(column_names=names, block_size=1 << 22),
            pacsv.ParseOptions(quote_char=False),
            pacsv.ConvertOptions(column_types={n: pa.float32() for n in names}),
        )
        arrow_alone = min(arrow_alone, time.perf_counter() - started)
    started = time.perf_counter()
    recipe_rows = sum(len(b[2]) for b in recipe_batches(train_txt, 4096))
    recipe_ingest = time.perf_counter() - started
    assert rows == recipe_rows == args.rows
    print("\n## ingest (text -> float32 arrays)")
    print(f"finetower (pyarrow)   {size_mb / ingest:8.1f} MB/s  {rows / ingest:10,.0f} rows/s")
    print(
        f"pyarrow read_csv alone {size_mb / arrow_alone:7.1f} MB/s  (one multi-threaded read "
        f"of the file: no checks, no row-major arrays); finetower at {arrow_alone / ingest:.2f}x"
    )
    print(
        f"recipe's parser       {size_mb / recipe_ingest:8.1f} MB/s  "
        f"{rows / recipe_ingest:10,.0f} rows/s   ratio {recipe_ingest / ingest:.1f}x"
    )

    shutil.rmtree(work / "train_ds", ignore_errors=True)
    started = time.perf_counter()
    dataset, _ = convert_text(train_txt, work / "train_ds")
    convert = time.perf_counter() - started
    print(f"convert (ingest + write + sha256)  {size_mb / convert:8.1f} MB/s")

    # 2. training throughput from the converted data set vs the bare loop
    train_rows = dataset.chunk(0, dataset.rows)
    print("\n## training samples/s, one epoch, default model")
    print("bare loop: tensors in memory, no bookkeeping; autograd's step, then finetower's")
    print(
        f"{'batch':>6} {'lr':>9} {'autograd':>10} {'val AUC':>8} {'bare loop':>10} "
        f"{'val AUC':>8} {'finetower':>10} {'val AUC':>8} {'ratio':>6} {'vs autograd':>11}"
    )
    for batch_size, rule in ((128, "none"), (4096, "sqrt")):
        config = TrainConfig(epochs=1, batch_size=batch_size, lr_rule=rule, seed=0)
        lr = config.effective_lr
        plain, plain_auc = bare_loop(train_rows, val, batch_size, lr, autograd_step)
        bare, bare_auc = bare_loop(train_rows, val, batch_size, lr, finetower_step)
        run = work / f"run-{batch_size}"
        shutil.rmtree(run, ignore_errors=True)
        result = train(work / "train_ds", run, config=config, progress=False)
        ours = dataset.rows / result.extra["epoch_seconds"][0]
        ours_auc = val_auc(result.model, val)
        print(
            f"{batch_size:>6} {lr:>9.2e} {plain:>10,.0f} {plain_auc:>8.4f} {bare:>10,.0f} "
            f"{bare_auc:>8.4f} {ours:>10,.0f} {ours_auc:>8.4f} {ours / bare:>6.2f} "
            f"{ours / plain:>10.2f}x"
        )

    # 3. end to end: 2 epochs from the text file at batch 128
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "run-e2e", ignore_errors=True)
    started = time.perf_counter()
    result = train(train_txt, work / "run-e2e", config=TrainConfig(epochs=2), progress=False)
    ours_seconds = time.perf_counter() - started
    ours_auc = val_auc(result.model, val)
    recipe_seconds, recipe_auc = recipe_end_to_end(train_txt, val, epochs=2)
    print("\n## end to end: 2 epochs from the text file, batch 128 (in-process, no startup)")
    print(f"finetower train (convert once, cached)  {ours_seconds:7.1f} s   val AUC {ours_auc:.4f}")
    print(
        f"recipe's parser, finetower's step      {recipe_seconds:7.1f} s   val AUC {recipe_auc:.4f}"
    )
    print(f"ratio {recipe_seconds / ours_seconds:.1f}x")


if __name__ == "__main__":
    main()
