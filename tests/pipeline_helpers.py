"""Small real data and runner invocations shared by the pipeline tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv

REPO = Path(__file__).resolve().parents[1]


def small_recipe_files(folder: Path, rows: int = 3000, items: int = 300, seed: int = 0) -> dict:
    """Train/eval recipe CSVs of a small demo world; also returns the arrays."""
    labels, users, item_rows, item_vectors = demo_samples(
        DemoData(rows=rows, items=items, seed=seed)
    )
    cut = int(rows * 0.8)
    train = write_recipe_csv(
        folder / "train" / "train.csv", labels[:cut], users[:cut], item_rows[:cut]
    )
    val = write_recipe_csv(folder / "eval" / "eval.csv", labels[cut:], users[cut:], item_rows[cut:])
    return {
        "train": train,
        "eval": val,
        "labels": labels,
        "users": users,
        "items": item_rows,
        "item_vectors": item_vectors,
        "cut": cut,
    }


def run_local_runner(*args: str, env: dict | None = None, timeout: int = 600):
    """`python -m pipeline.local_runner ARGS` in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.local_runner", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def distinct_rows(array: np.ndarray) -> int:
    return len(
        np.unique(
            np.ascontiguousarray(array).view(
                np.dtype((np.void, array.dtype.itemsize * array.shape[1]))
            )
        )
    )
