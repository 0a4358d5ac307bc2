"""`finetower demo`: the whole pipeline on the embedded default, no server, no download.

A two-domain world (synthetic, or MovieLens split by time into a source and a sparse
target) -> item2vec on the source -> leakage-free target samples -> the recipe fine-tuned
-> exact full-catalogue metrics next to popularity and the pretrained vectors alone ->
an index and a few recalled items. Artifacts and a report land in `out_dir`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finetower.artifacts import atomic_path, write_json
from finetower.dataset import SampleDataset
from finetower.datasets import WorldConfig, load_movielens, synthetic_world, transfer_split
from finetower.evaluate import Interactions, evaluate_models, read_interactions
from finetower.pretrain import PretrainConfig, pretrain
from finetower.recall import Recaller, build_item_index
from finetower.samples import SampleConfig, build_samples, query_user_vectors
from finetower.train import TrainConfig, evaluate_samples, train
from finetower.vectors import Vectors, read_vectors

KS = (10, 20, 50, 100)
METHODS = {
    "popularity": "popularity",
    "pretrained": "pretrained vectors alone",
    "model": "recipe, fine-tuned",
}


@dataclass
class DemoReport:
    out_dir: Path
    data: str
    metrics: dict[str, dict[str, float]]
    auc: float
    examples: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)


def _source_and_target(movielens: Path | None, seed: int, world: dict | None):
    if movielens is None:
        config = WorldConfig(**{"seed": seed, **(world or {})})
        generated = synthetic_world(config)
        description = (
            f"synthetic two-domain world ({config.n_users:,} users, {config.n_items:,} items)"
        )
        return description, generated.source, generated.target
    path = movielens / "u.data" if movielens.is_dir() else movielens
    log = load_movielens(path)
    split = transfer_split(log, seed=seed)
    return f"MovieLens {path.name}, transfer split", split.source, split.target


class Laps:
    """Times the stages of a pipeline: `lap(name)` records the time since the last lap."""

    def __init__(self, log=print) -> None:
        self.log = log
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._clock
        self._clock = now
        self.log(f"  {name}: {self.seconds[name]:.1f} s")


def run_demo(
    out_dir: str | Path = "finetower-demo",
    *,
    movielens: str | Path | None = None,
    seed: int = 0,
    epochs: int = 10,
    world: dict | None = None,
    progress: bool = True,
    log=print,
) -> DemoReport:
    """Run the pipeline; return the held-out metrics and write `report.md` + a plot.

    `world` overrides the synthetic world's settings (`finetower.datasets.WorldConfig`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lap = Laps(log)
    seconds = lap.seconds

    description = prepare_data(out, movielens=movielens, seed=seed, world=world, log=log, lap=lap)
    shutil.rmtree(out / "run", ignore_errors=True)  # a demo always trains afresh
    model = train(
        out / "samples" / "train",
        out / "run",
        val_data=out / "samples" / "val",
        config=TrainConfig(epochs=epochs, patience=2, seed=seed),
        progress=progress,
    ).model
    lap("fine-tune the recipe")

    data = evaluation_data(out)
    report = evaluate_models(
        data.item_vectors, data.train, data.test, model=model, user_vectors=data.user_vectors, ks=KS
    )
    auc = evaluate_samples(model, SampleDataset(out / "samples" / "test")).auc
    metrics = {name: report[name] for name in METHODS}
    lap("evaluate over the whole catalogue")

    build_item_index(
        out / "run", out / "vectors" / "item_vectors.bin", out / "index", backend="hnsw"
    )
    recaller = Recaller(out / "index")
    examples = _examples(recaller, out / "samples", data.test, k=5)
    lap("index (hnsw) and recall")

    demo = DemoReport(out, description, metrics, auc, examples, seconds)
    _write_report(demo, report["protocol"])
    return demo


def prepare_data(
    out: Path,
    *,
    movielens: str | Path | None = None,
    seed: int = 0,
    world: dict | None = None,
    log: Callable[[str], Any] = print,
    lap: Callable[[str], Any] = lambda _: None,
) -> str:
    """Write the two-domain data, the item2vec vectors and the target samples under `out`.

    `out/data/{source,target}.parquet`, `out/vectors/` (a `finetower pretrain` output) and
    `out/samples/` (a `build_samples` output, with ids); returns the data's description.
    `lap(stage)` is called after each stage.
    """
    description, source, target = _source_and_target(
        Path(movielens) if movielens is not None else None, seed, world
    )
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(source, out / "data" / "source.parquet")
    pq.write_table(target, out / "data" / "target.parquet")
    log(f"data: {description}: {len(source):,} source and {len(target):,} target events")
    lap("data")
    pretrain(out / "data" / "source.parquet", out / "vectors", PretrainConfig(seed=seed))
    lap("pretrain item2vec on the source domain")
    build_samples(
        out / "data" / "target.parquet",
        out / "vectors",
        out / "samples",
        config=SampleConfig(seed=seed, text=False),
    )
    lap("build target samples")
    return description


@dataclass
class EvaluationData:
    """What `evaluate_models` needs, read from `prepare_data`'s output."""

    item_vectors: Vectors  # the catalogue
    train: Interactions  # excluded from rankings; popularity counts
    test: Interactions  # the held-out target events
    user_vectors: Vectors  # each test user's vector from behaviour before the test
    vocabularies: dict[str, list[str]]  # what ID models' id rows stand for


def evaluation_data(out: Path) -> EvaluationData:
    """Read the catalogue, the train/test interactions, held-out user vectors, vocabularies."""
    item_vectors = read_vectors(out / "vectors" / "item_vectors.bin")
    test = read_interactions(out / "samples" / "test_interactions.parquet")
    train_samples = SampleDataset(out / "samples" / "train")
    return EvaluationData(
        item_vectors,
        read_interactions(out / "samples" / "train_interactions.parquet"),
        test,
        held_out_user_vectors(out / "samples", item_vectors, test),
        {side: train_samples.vocabulary(side) for side in ("user", "item")},
    )


def held_out_user_vectors(samples: Path, item_vectors: Vectors, test: Interactions) -> Vectors:
    """Each test user's vector at their first test event: only behaviour before it."""
    users, first = np.unique(test.users, return_index=True)
    order = np.lexsort([test.timestamps, test.users])
    first_time = test.timestamps[order][np.searchsorted(test.users[order], users)]
    histories = pq.read_table(samples / "histories.parquet")
    vectors, has_history = query_user_vectors(histories, item_vectors, users.tolist(), first_time)
    return Vectors(vectors[has_history], [str(u) for u in users[has_history]])


def _examples(recaller: Recaller, samples: Path, test, k: int) -> list[dict[str, Any]]:
    histories = pq.read_table(samples / "histories.parquet")
    examples = []
    for user in np.unique(test.users)[:3]:
        rows = histories.filter(pc.equal(histories["user"].cast("string"), str(user)))
        rows = rows.sort_by("timestamp")
        history = [str(i) for i in rows["item"].to_pylist()][-5:]
        if not history:
            continue
        answer = recaller.for_history(history, k, exclude_seen=True)
        held_out = sorted(
            {str(i) for u, i in zip(test.users, test.items, strict=True) if u == user}
        )
        examples.append(
            {
                "user": str(user),
                "last_items": history,
                "held_out": held_out,
                "recalled": answer["items"],
            }
        )
    return examples


def _write_report(demo: DemoReport, protocol: dict) -> None:
    lines = [
        "# finetower demo",
        "",
        f"Data: {demo.data}.",
        "",
        "Held-out target interactions (each user's last), ranked against the whole item "
        f"catalogue ({protocol['catalogue']:,} items), each user's training items excluded; "
        "user vectors only from behaviour before the held-out event. Exact scores, no ANN.",
        "",
        "| method | "
        + " | ".join(f"Recall@{k}" for k in KS)
        + " | "
        + " | ".join(f"NDCG@{k}" for k in KS)
        + " |",
        "|---|" + "---|" * (2 * len(KS)),
    ]
    for name, label in METHODS.items():
        m = demo.metrics[name]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{m[f'recall@{k}']:.4f}" for k in KS)
            + " | "
            + " | ".join(f"{m[f'ndcg@{k}']:.4f}" for k in KS)
            + " |"
        )
    lines += [
        "",
        f"Test AUC of the fine-tuned recipe (pointwise test samples): {demo.auc:.4f}",
        "",
        "## Recalled for a few users (HNSW index, folded query)",
        "",
    ]
    for example in demo.examples:
        recalled = ", ".join(f"{i['id']} ({i['score']:.3f})" for i in example["recalled"])
        lines.append(
            f"- user {example['user']}: last items {', '.join(example['last_items'])}"
            f" -> {recalled}; held out: {', '.join(example['held_out'])}"
        )
    lines += [
        "",
        "Time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in demo.seconds.items()),
    ]
    with atomic_path(demo.out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(
        demo.out_dir / "report.json",
        {
            "data": demo.data,
            "protocol": protocol,
            "metrics": demo.metrics,
            "test_auc": demo.auc,
            "examples": demo.examples,
            "seconds": demo.seconds,
        },
    )
    plot_recall(demo.metrics, demo.out_dir / "recall_at_k.png", demo.data)


def plot_recall(
    metrics: dict[str, dict[str, float]],
    path: Path,
    title: str,
    labels: dict[str, str] | None = None,
) -> None:
    """Plot Recall@K against K for each method in `labels` (name -> label; the demo's)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for name, label in (labels or METHODS).items():
        ax.plot(KS, [metrics[name][f"recall@{k}"] for k in KS], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.set_xlabel("K (whole catalogue)")
    ax.set_ylabel("Recall@K")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
