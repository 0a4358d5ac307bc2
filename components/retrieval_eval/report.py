"""The retrieval evaluation's markdown report and plot (HitRate@K and Recall@K per method)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from components.retrieval_eval.evaluation import ratios

METHOD_NAMES = {
    "towers": "fine-tuned towers (query·item_embedding + bias)",
    "popularity": "popularity",
    "pretrained": "pretrained vectors alone (user·item)",
}


def _fmt(value: float) -> str:
    return (
        "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def markdown_report(result: dict[str, Any], title: str = "Retrieval evaluation") -> str:
    """A table per metric family (rows: methods; columns: K), the ratios and the protocol."""
    ks = result["ks"]
    methods = result["methods"]
    lines = [f"# {title}", ""]
    if "towers" not in methods:
        lines += ["Nothing was pushed: only the baselines are evaluated.", ""]
    any_method = next(iter(methods.values()))
    lines += [
        f"Exact, full catalogue ({any_method['items']} items), everything the user saw before "
        f"the query time excluded (every domain, every method); "
        f"{any_method['users']} users, {any_method['test_pairs']} held-out pairs.",
        "",
    ]
    for family, label in (("hit_rate", "HitRate"), ("recall", "Recall"), ("ndcg", "NDCG")):
        lines += [
            f"| {label} | " + " | ".join(f"@{k}" for k in ks) + " |",
            "|---|" + "---:|" * len(ks),
        ]
        for name, metrics in methods.items():
            cells = " | ".join(_fmt(metrics[f"{family}@{k}"]) for k in ks)
            lines.append(f"| {METHOD_NAMES.get(name, name)} | {cells} |")
        lines.append("")
    lines += ["| MRR | |", "|---|---:|"]
    lines += [f"| {METHOD_NAMES.get(n, n)} | {_fmt(m['mrr'])} |" for n, m in methods.items()]
    lines.append("")
    for name, value in ratios(result).items():
        lines.append(f"- HR@50 {name.replace('_', ' ')}: {_fmt(value)}x")
    ann = result.get("ann") or {}
    if ann:
        cells = ", ".join(f"@{k} {ann[f'recall@{k}']:.4f}" for k in ks if f"recall@{k}" in ann)
        lines += [
            "",
            f"ANN ({ann['backend']}, {ann['params']}) recall against exact search: {cells}. "
            "This is the index's fidelity, not model quality.",
        ]
    lines += ["", "Protocol:", ""]
    lines += [f"- {key}: {value}" for key, value in result["protocol"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | Path) -> None:
    """HitRate@K and Recall@K against K for each method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ks = result["ks"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    families = (("hit_rate", "HitRate@K"), ("recall", "Recall@K"))
    for axis, (family, label) in zip(axes, families, strict=True):
        for name, metrics in result["methods"].items():
            axis.plot(ks, [metrics[f"{family}@{k}"] for k in ks], marker="o", label=name)
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("K")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
