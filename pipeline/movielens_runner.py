"""Run the MovieLens transfer experiment on LocalDagRunner and print its figures.

    python -m pipeline.movielens_runner --data DIR --output_dir OUT [--dim 128 ...]

`DIR` holds ml-100k (u.data) or ml-1m (ratings.dat) as GroupLens ships them, or is that
folder itself. Runs the source, transfer and scratch DAGs (`pipeline.movielens_pipeline`),
then prints each target run's exact retrieval metrics, the HR@50 ratios of the towers over
popularity and over the pretrained vectors, and transfer against scratch; writes
OUT/summary.json and OUT/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFMA recognises the Keras model only so

from components.common.errors import FinetowerError  # noqa: E402
from pipeline.movielens_pipeline import MovieLensConfig, config_from, run_experiment  # noqa: E402

METHODS = ("towers", "popularity", "pretrained")


def _find_movielens(data: str) -> str:
    folder = Path(data)
    for candidate in (folder, folder / "ml-100k", folder / "ml-1m"):
        if (candidate / "u.data").exists() or (candidate / "ratings.dat").exists():
            return str(candidate)
    return data  # load_movielens names what is missing


def metrics_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per (run, method), HitRate/Recall/NDCG at each K."""
    runs = {n: r for n, r in summary["runs"].items() if "metrics" in r}
    if not runs:
        return "(no target run)\n"
    ks = next(iter(runs.values()))["metrics"]["ks"]
    head = ["run", "method"] + [f"{m}@{k}" for m in ("HR", "Recall", "NDCG") for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for run, info in runs.items():
        for method in METHODS:
            metrics = info["metrics"]["methods"].get(method)
            if metrics is None:
                continue
            cells = [
                f"{metrics[f'{family}@{k}']:.4f}"
                for family in ("hit_rate", "recall", "ndcg")
                for k in ks
            ]
            lines.append(f"| {run} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison(summary: dict[str, Any]) -> str:
    """The goals' ratios and transfer against scratch, as lines."""
    lines = []
    runs = summary["runs"]
    for run in ("transfer", "scratch"):
        ratios = runs.get(run, {}).get("metrics", {}).get("ratios") or {}
        for name, value in ratios.items():
            lines.append(f"{run}: HR@50 {name.replace('_', ' ')} = {value:.2f}x (goal >= 1.25x)")
    if "transfer" in runs and "scratch" in runs:
        hr = {
            run: runs[run]["metrics"]["methods"].get("towers", {}).get("hit_rate@50")
            for run in ("transfer", "scratch")
        }
        if None not in hr.values():
            lines.append(
                f"transfer vs scratch: HR@50 {hr['transfer']:.4f} vs {hr['scratch']:.4f} "
                f"({hr['transfer'] / max(hr['scratch'], 1e-12):.2f}x)"
            )
        for run in ("transfer", "scratch"):
            history = runs[run].get("training", {}).get("history", {})
            auc = history.get("val_auc") or []
            if auc:
                lines.append(
                    f"{run}: val AUC after epoch 1 {auc[0]:.4f}, best {max(auc):.4f} "
                    f"({len(auc)} epochs)"
                )
    i2v = summary.get("item2vec", {})
    if i2v:
        lines.append(
            f"item2vec: {i2v.get('count')} items, {i2v.get('dim')}-d, "
            f"{i2v.get('words_per_second')} words/s"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with ml-100k or ml-1m")
    parser.add_argument("--output_dir", required=True)
    defaults = MovieLensConfig(data="", output_dir="")
    for name in (
        "target_after",
        "target_rate",
        "max_users",
        "dim",
        "item2vec_epochs",
        "min_count",
        "negatives",
        "last_n",
        "source_epochs",
        "target_epochs",
        "batch_size",
        "learning_rate",
        "auc_floor",
        "seed",
    ):
        default = getattr(defaults, name)
        kind = type(default) if default is not None else int
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"default {default}")
    parser.add_argument("--ann_backend", default=None, help="flat, hnsw, ivf, annoy; 'none'")
    parser.add_argument("--no_scratch", action="store_true", help="skip the scratch run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k not in ("no_scratch", "ann_backend")}
    values["data"] = _find_movielens(args.data)
    if args.ann_backend is not None:
        values["ann_backend"] = None if args.ann_backend == "none" else args.ann_backend
    config = config_from(**values, scratch=not args.no_scratch)
    try:
        summary = run_experiment(config)
    except FinetowerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(config.output_dir)
    table, lines = metrics_table(summary), comparison(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "report.md").write_text(f"# MovieLens transfer\n\n{table}\n{lines}")
    print(table)
    print(lines)
    for run, info in summary["runs"].items():
        if "report" in info:
            print(f"{run} report: {info['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
