"""Small real data and runner invocations shared by the pipeline tests."""

from __future__ import annotations

import os
import shutil
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
    """`python -m pipeline.local_runner ARGS` in a subprocess, as a user runs it (TensorFlow's
    logs not silenced: the runner sends them to its log file); returns CompletedProcess."""
    # without the legacy-Keras switch conftest sets for this process: the runner sets it itself
    inherited = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    full_env = {**inherited, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.local_runner", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def activated(env: dict | None = None) -> dict:
    """`env` as `. .venv/bin/activate` leaves it, the README's way to run the `tfx` CLI: the
    venv's bin first on PATH and VIRTUAL_ENV set. TFX's CLI decides which orchestrators are
    installed by running `pip freeze --local` with the first `pip` on PATH."""
    env = dict(os.environ if env is None else env)
    bin_dir = os.path.dirname(sys.executable)
    env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHOME", None)
    return env


def tfx_cli() -> str | None:
    """The `tfx` command an activated venv finds (None: not installed beside this Python)."""
    return shutil.which("tfx", path=os.path.dirname(sys.executable))


def distinct_rows(array: np.ndarray) -> int:
    return len(
        np.unique(
            np.ascontiguousarray(array).view(
                np.dtype((np.void, array.dtype.itemsize * array.shape[1]))
            )
        )
    )


def folded_and_full_probabilities(serving: str, model_uri: str, users, items):
    """The probability the folded towers of version 1 give (query · item embedding + bias,
    through the sigmoid) and the one the full pushed model gives, for the same rows. Paths
    may be local or gs://."""
    import tensorflow as tf

    def signature(path: str):
        return tf.saved_model.load(path).signatures["serving_default"]

    user = signature(f"{serving}/user_tower/1")(user_vector=tf.constant(users))
    item = signature(f"{serving}/item_tower/1")(item_vector=tf.constant(items))
    assert user["query"].shape == (len(users), 64) and item["item_embedding"].shape == (
        len(items),
        64,
    )
    logits = np.sum(user["query"].numpy() * item["item_embedding"].numpy(), axis=1)
    folded = 1 / (1 + np.exp(-(logits + user["bias"].numpy()[:, 0])))
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    "user_vector": tf.train.Feature(float_list=tf.train.FloatList(value=u)),
                    "item_vector": tf.train.Feature(float_list=tf.train.FloatList(value=i)),
                }
            )
        ).SerializeToString()
        for u, i in zip(users, items, strict=True)
    ]
    full = signature(f"{model_uri}/Format-Serving")(examples=tf.constant(examples))
    return folded, full["probability"].numpy()[:, 0]
