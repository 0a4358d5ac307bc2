"""`python -m pipeline.local_runner --simulate_days N --output_dir DIR`: the daily loop, watched.

Each day writes a synthetic span (`DIR/sim_data/span-<day>/{train,eval}.csv`) from the embedded
default's world (pipeline/demo_data.py) whose hidden rule drifts slowly (the users' tastes
rotate a little a day) and whose catalogue grows (`DIR/sim_data/items.csv` gains items), then
runs the pipeline on the `{SPAN}` pattern as a cron job would, and prints a row: span, the new
model's eval AUC, the served model's AUC on the same span, pushed or not, the version served
after the run,
items embedded anew, the drift distance. The last day (of at least 4) injects a shift of the
user vectors large enough for the drift gate to stop the run. Day 3 also trains from
initialisation on the same window (a run that cannot be pushed: its AUC floor is above 1) so
the table shows warm start against it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pipeline import configs
from pipeline.demo_data import DemoData, write_item_catalogue, write_recipe_csv

SIM = DemoData(rows=4000, items=400, user_dim=16, item_dim=16, seed=7)
ITEMS_PER_DAY = 60  # the catalogue grows by this many items a day
ROTATION_PER_DAY = 0.06  # radians the users' tastes turn a day: the hidden rule drifts slowly
DRIFT_SHIFT = 0.6  # added to every user vector on the drift day
COMPARISON_DAY = 3


def world(config: DemoData = SIM, days: int = 5):
    """The fixed parts: maps from tastes to vectors, and every item the catalogue will hold."""
    rng = np.random.default_rng(config.seed)
    user_map = rng.normal(size=(config.taste_dim, config.user_dim))
    item_map = rng.normal(size=(config.taste_dim, config.item_dim))
    user_scale = rng.uniform(0.02, 0.3, size=config.user_dim)
    item_scale = rng.uniform(0.02, 0.3, size=config.item_dim)
    items = config.items + ITEMS_PER_DAY * days
    item_taste = rng.normal(size=(items, config.taste_dim))
    item_vectors = item_taste @ item_map / np.sqrt(config.taste_dim) * item_scale
    return dict(
        user_map=user_map,
        user_scale=user_scale,
        item_taste=item_taste,
        item_vectors=item_vectors.astype(np.float32),
    )


def rotation(taste_dim: int, angle: float) -> np.ndarray:
    """A rotation by `angle` in the plane of the first two taste dimensions."""
    turn = np.eye(taste_dim)
    c, s = np.cos(angle), np.sin(angle)
    turn[:2, :2] = [[c, -s], [s, c]]
    return turn


def day_samples(w: dict, day: int, config: DemoData = SIM, shift: float = 0.0):
    """(labels, users, items, catalogue size) of `day` (1-based)."""
    rng = np.random.default_rng(config.seed * 1000 + day)
    n, taste_dim = config.rows, config.taste_dim
    catalogue = config.items + ITEMS_PER_DAY * (day - 1)
    user_taste = rng.normal(size=(n, taste_dim))
    users = user_taste @ w["user_map"] + rng.normal(scale=0.5, size=(n, config.user_dim))
    users = users / np.sqrt(taste_dim) * w["user_scale"] + shift
    rows = rng.integers(0, catalogue, size=n)
    tastes = user_taste @ rotation(taste_dim, ROTATION_PER_DAY * (day - 1))
    affinity = np.einsum("nd,nd->n", tastes, w["item_taste"][rows]) / np.sqrt(taste_dim)
    labels = (affinity + rng.normal(scale=config.noise, size=n) > 0).astype(np.int64)
    return labels, users.astype(np.float32), w["item_vectors"][rows], catalogue


def write_day(data: Path, w: dict, day: int, shift: float = 0.0) -> None:
    labels, users, items, catalogue = day_samples(w, day, shift=shift)
    cut = int(len(labels) * 0.8)
    folder = data / f"span-{day}"
    write_recipe_csv(folder / "train.csv", labels[:cut], users[:cut], items[:cut])
    write_recipe_csv(folder / "eval.csv", labels[cut:], users[cut:], items[cut:])
    write_item_catalogue(data / "items.csv", w["item_vectors"][:catalogue])


def served_version(serving_dir: str) -> str:
    """The newest version in the serving dir after the run ("-" when none)."""
    folder = Path(serving_dir) / "user_tower"
    versions = (
        [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.exists() else []
    )
    return str(max(versions)) if versions else "-"


def run_row(config: configs.PipelineConfig, label: str, started: float, status: int) -> dict:
    """The table's row for the run that started at `started`, from ML Metadata."""
    from pipeline.run_summary import (
        artifact_property,
        baseline_auc,
        eval_metrics,
        latest_run_artifacts,
    )

    found = latest_run_artifacts(config.metadata_path, since=started)
    row = dict(span=label, new_auc=None, served_auc=None, pushed="-", version="-", embedded="-")
    evaluations = found.get("ModelEvaluation", [])
    if evaluations:
        row["new_auc"] = eval_metrics(evaluations[-1].uri).get("auc")
        row["served_auc"] = baseline_auc(evaluations[-1].uri)
    for pushed in found.get("PushedModel", []):
        row["pushed"] = "yes" if artifact_property(pushed, "pushed") else "no"
    row["version"] = served_version(config.serving_dir)
    for embedded in found.get("finetower.ItemEmbeddings", []):
        row["embedded"] = artifact_property(embedded, "count")
    drift = [a for a in found.get("ExampleAnomalies", []) if "drift_feature" in a.custom_properties]
    row["drift"] = (
        f"{artifact_property(drift[-1], 'drift_feature')} "
        f"{artifact_property(drift[-1], 'drift_distance'):.3f}"
        if drift
        else "-"
    )
    if status:
        row["pushed"] = "STOPPED"
    return row


def print_table(rows: list[dict], out) -> None:
    def number(x):
        return "-" if x is None else f"{x:.4f}"

    header = f"{'span':<14}{'new AUC':>9}{'served AUC':>12}{'pushed':>9}{'served':>8}"
    print(header + f"{'embedded':>10}  drift (feature, distance)", file=out)
    for r in rows:
        print(
            f"{r['span']:<14}{number(r['new_auc']):>9}{number(r['served_auc']):>12}"
            f"{r['pushed']:>9}{r['version']!s:>8}{r['embedded']!s:>10}  {r['drift']}",
            file=out,
        )


def simulate(config: configs.PipelineConfig, days: int, console, run) -> int:
    """Run `days` simulated days into `config.output_dir`; print the table; 0 when every day
    did what it should (the drift day stopped, the others finished)."""
    data = Path(config.output_dir) / "sim_data"
    w = world(days=days)
    drift_day = days if days >= 4 else None
    base = dataclasses.replace(
        config,
        train_data=str(data / "span-{SPAN}" / "train.csv"),
        val_data=str(data / "span-{SPAN}" / "eval.csv"),
        items=str(data / "items.csv"),
        user_dim=SIM.user_dim,
        item_dim=SIM.item_dim,
        span=None,
        span_range=None,
    )
    rows, ok = [], True
    for day in range(1, days + 1):
        write_day(data, w, day, shift=DRIFT_SHIFT if day == drift_day else 0.0)
        started = time.time()
        status = run(base, console)
        rows.append(run_row(base, str(day), started, status))
        ok &= bool(status) == (day == drift_day)
        if day == COMPARISON_DAY:
            started = time.time()
            cold = dataclasses.replace(base, warm_start="none", auc_floor=1.01)
            status = run(cold, console)
            rows.append(run_row(base, f"{day} from init", started, status))
            rows[-1]["pushed"] = "no (cmp)"
        print_table(rows, console.out)
    return 0 if ok else 1
