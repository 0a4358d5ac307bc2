"""`finetower report`: every way to retrieve with finetower, side by side, under one protocol.

The data is prepared once, as the demo does it (`finetower.demo.prepare_data`): a
two-domain world, item2vec on the source, leakage-free target samples. Then each trained
method below is fine-tuned on the same target samples, and all of them, popularity and the
pretrained vectors alone are scored by `evaluate_models` over the whole catalogue.
`report.md` spells the protocol out; `report.json` holds every number; `recall_at_k.png`
plots Recall@K.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetower.artifacts import atomic_path, read_json, write_json
from finetower.dataset import SampleDataset
from finetower.demo import Laps, evaluation_data, plot_recall, prepare_data
from finetower.errors import ArtifactError
from finetower.evaluate import evaluate_models
from finetower.id_towers import IdTowers
from finetower.train import TrainConfig, evaluate_samples, train
from finetower.user_vectors import DEFAULT_LAST_N

KS = (10, 20, 50, 100)
BASELINE_LABELS = {
    "popularity": "popularity (target train counts)",
    "pretrained": "pretrained vectors alone (user · item)",
}


@dataclass(frozen=True)
class Method:
    """A trained method: the loss, and whether (and how) the towers take ID embeddings."""

    label: str
    loss: str = "bce"  # | "softmax" (in-batch, temperature 1)
    logq: bool = True  # softmax only: logQ correction by training item frequency
    ids: str = "none"  # | "scratch" (random init) | "pretrained" (init from item2vec)

    def id_towers(self, vectors_dir: Path) -> IdTowers | None:
        if self.ids == "none":
            return None
        if self.ids == "scratch":
            return IdTowers()
        return IdTowers(init_from=str(vectors_dir), freeze_epochs=1)


METHODS = {
    "recipe": Method("recipe (vectors in, bce)"),
    "recipe_softmax": Method("recipe, in-batch softmax + logQ", loss="softmax"),
    "recipe_softmax_no_logq": Method("recipe, in-batch softmax, no logQ", "softmax", logq=False),
    "ids_scratch": Method("ID towers from scratch (bce)", ids="scratch"),
    "ids_pretrained": Method("ID towers from pretrained, frozen 1 epoch (bce)", ids="pretrained"),
}


@dataclass
class ComparisonReport:
    out_dir: Path
    data: str
    protocol: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # method or baseline -> metric -> value
    test_auc: dict[str, float]  # trained method -> AUC on the pointwise test samples
    training: dict[str, dict[str, Any]]  # trained method -> epochs run, best epoch
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        """Every method and baseline in the report's order -> its label."""
        return {**BASELINE_LABELS, **{name: m.label for name, m in METHODS.items()}}


def run_report(
    out_dir: str | Path = "finetower-report",
    *,
    movielens: str | Path | None = None,
    seed: int = 0,
    epochs: int = 10,
    world: dict | None = None,
    progress: bool = False,
    log: Callable[[str], Any] = print,
) -> ComparisonReport:
    """Prepare the data, train every method in `METHODS`, evaluate all; write the report.

    `world` overrides the synthetic world's settings (`finetower.datasets.WorldConfig`);
    `movielens` (u.data or its folder) replaces the synthetic world by a MovieLens log.
    """
    out = Path(out_dir)
    runs = out / "runs"
    if runs.exists() and any(runs.iterdir()):
        raise ArtifactError(f"{runs} already holds trained runs; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    lap = Laps(log)
    seconds = lap.seconds

    description = prepare_data(out, movielens=movielens, seed=seed, world=world, log=log, lap=lap)
    test_samples = SampleDataset(out / "samples" / "test")
    models, test_auc, training = {}, {}, {}
    for name, method in METHODS.items():
        result = train(
            out / "samples" / "train",
            runs / name,
            val_data=out / "samples" / "val",
            config=TrainConfig(
                epochs=epochs, patience=2, seed=seed, loss=method.loss, logq=method.logq
            ),
            id_towers=method.id_towers(out / "vectors"),
            progress=progress,
        )
        models[name] = result.model
        test_auc[name] = evaluate_samples(result.model, test_samples).auc
        training[name] = {
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
        }
        lap(f"train {name}")

    data = evaluation_data(out)
    evaluated = evaluate_models(
        data.item_vectors,
        data.train,
        data.test,
        models=models,
        vocabularies=data.vocabularies,
        user_vectors=data.user_vectors,
        ks=KS,
    )
    lap("evaluate over the whole catalogue")
    protocol = {
        **evaluated.pop("protocol"),
        "users": evaluated["popularity"]["users"],
        "test_pairs_evaluated": evaluated["popularity"]["test_pairs"],
        "samples": read_json(out / "samples" / "manifest.json")["splits"],
    }
    report = ComparisonReport(out, description, protocol, evaluated, test_auc, training, seconds)
    write_report(report, seed=seed, epochs=epochs)
    return report


def _protocol_text(report: ComparisonReport, seed: int, epochs: int) -> list[str]:
    p = report.protocol
    return [
        "## Protocol",
        "",
        f"- **Data**: {report.data}. A big *source* domain and a sparse *target* domain. "
        "MovieLens is split by time: events at or after the 80% time quantile that win a "
        "seeded 20% coin flip form the target, everything else the source. The synthetic "
        "world draws both domains from related tastes with different popularity.",
        "- **Pretraining**: item2vec (gensim skip-gram, 128-d) on the source domain only; "
        "its items with a vector form the **catalogue** "
        f"({p['catalogue']:,} items): every one is ranked for every user.",
        "- **Split of the target** (per user, by time): the last event is test, the one "
        "before it validation, the rest train (a user with too few events holds out fewer). "
        "Target events whose item has no pretrained vector are dropped first.",
        f"- **User vectors**: the mean of the pretrained vectors of the user's last "
        f"{DEFAULT_LAST_N} items among source events and target *train* events strictly "
        "before the user's test event. Validation and test events never enter a user "
        "vector or a training sample's user vector.",
        "- **Training samples**: each target train event is a positive with 4 negatives "
        "drawn uniformly from the target catalogue (never an item the user has in the "
        "target log). Every method trains on the same samples "
        f"(seed {seed}, at most {epochs} epochs, Adam 1e-3, batch 128, early stopping on "
        "validation loss with patience 2, best epoch restored). Softmax methods use the "
        "positives only: in-batch softmax, temperature 1, accidental hits removed.",
        "- **ID towers**: a trainable ID embedding (128-d) per user and item, concatenated "
        "to the pretrained vector at each tower's input. *From scratch*: U(-0.05, 0.05). "
        "*From pretrained*: rows copied from the item2vec item and user vectors (ids "
        "unseen at pretraining: N(0, s²), s the pretrained values' std), frozen for the "
        "first epoch, then fine-tuned.",
        f"- **Evaluation**: {p['users']:,} users with a test event and a user vector, "
        f"{p['test_pairs_evaluated']:,} test pairs (of {p['test_pairs']:,}; "
        f"{p['test_pairs_unusable']:,} unusable: item outside the catalogue or user "
        "without a vector). Each user's target *train* items are excluded from their "
        "ranking (the validation event is not). Exact scores over the whole catalogue, "
        "batched matrix products, no ANN index.",
        "- **Scores**: a model ranks by its own logit, `(w ⊙ user_tower(u)) · "
        "item_tower(v) + b` (ID models with the user's and item's id rows as well); "
        "pretrained vectors alone by `u · v`; popularity by the item's count among target "
        "train events. Recall@K = |top K ∩ relevant| / |relevant|; NDCG@K with binary "
        "gains and log2 discounts; one relevant item per user here, so Recall@K = "
        "HitRate@K.",
        "- **Test AUC**: each trained model's logits on the pointwise test samples (the "
        "test positives and their 4 sampled negatives each); for softmax models it ranks "
        "but is not a calibrated probability.",
        f"- **Noise**: over {p['users']:,} users a Recall@K near p has a standard error of "
        f"about √(p(1−p)/n): {_standard_error(0.1, p['users']):.3f} at p = 0.1, "
        f"{_standard_error(0.5, p['users']):.3f} at p = 0.5. Differences within about "
        "twice that are not evidence either way.",
    ]


def _standard_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def write_report(report: ComparisonReport, *, seed: int, epochs: int) -> None:
    """Write `report.md`, `report.json` and `recall_at_k.png` into `report.out_dir`."""
    header = (
        "| method | "
        + " | ".join(f"R@{k}" for k in KS)
        + " | "
        + " | ".join(f"NDCG@{k}" for k in KS)
        + " | MRR | test AUC |"
    )
    lines = [
        "# finetower comparison report",
        "",
        f"Data: {report.data}.",
        "",
        header,
        "|---|" + "---|" * (2 * len(KS) + 2),
    ]
    for name, label in report.labels.items():
        m = report.metrics[name]
        auc = f"{report.test_auc[name]:.4f}" if name in report.test_auc else "–"
        lines.append(
            f"| {label} | "
            + " | ".join(f"{m[f'recall@{k}']:.4f}" for k in KS)
            + " | "
            + " | ".join(f"{m[f'ndcg@{k}']:.4f}" for k in KS)
            + f" | {m['mrr']:.4f} | {auc} |"
        )
    lines += ["", *_protocol_text(report, seed, epochs), ""]
    lines.append(
        "Epochs run (best): "
        + ", ".join(
            f"{n} {t['epochs_run']} ({t['best_epoch']})" for n, t in report.training.items()
        )
    )
    lines.append(
        "Time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())
    )
    with atomic_path(report.out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    payload = asdict(report)
    payload["out_dir"] = str(report.out_dir)
    payload["labels"] = report.labels
    payload["settings"] = {"seed": seed, "epochs": epochs, "ks": list(KS)}
    write_json(report.out_dir / "report.json", payload)
    plot_recall(report.metrics, report.out_dir / "recall_at_k.png", report.data, report.labels)
