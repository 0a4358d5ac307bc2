"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Each checkpoint is a directory `RUN_DIR/checkpoints/step-NNNNNNNNN/` written under a
temporary name and renamed; the file `checkpoints/latest` (itself replaced atomically)
names the newest complete one. A crash at any moment leaves a usable checkpoint.
Tensors are stored as safetensors; only Adam's state uses a torch file, loaded with
`weights_only=True`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from finetower.artifacts import atomic_dir, atomic_path, read_json, write_json
from finetower.errors import ArtifactError

KEEP = 2


@dataclass
class TrainingState:
    """Where training is: the next batch to run, and what early stopping has seen."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    metric_sums: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Checkpoint:
    state: TrainingState
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # RNG state, metric bins


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, checkpoint: Checkpoint) -> Path:
    """Write a checkpoint and point `latest` at it; keep the newest KEEP."""
    root = checkpoints_dir(run_dir)
    target = root / f"step-{checkpoint.state.step:09d}"
    with atomic_dir(target) as tmp:
        save_file(_cpu(checkpoint.model), str(tmp / "model.safetensors"))
        if checkpoint.best_model is not None:
            save_file(_cpu(checkpoint.best_model), str(tmp / "best.safetensors"))
        save_file(_cpu(checkpoint.tensors), str(tmp / "tensors.safetensors"))
        torch.save(checkpoint.optimizer, tmp / "optimizer.pt")
        write_json(tmp / "state.json", checkpoint.state.to_dict())
    with atomic_path(root / "latest") as tmp:
        tmp.write_text(target.name + "\n")
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = checkpoints_dir(run_dir) / "latest"
    if not pointer.exists():
        return None
    path = checkpoints_dir(run_dir) / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise ArtifactError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    best = path / "best.safetensors"
    return Checkpoint(
        state=TrainingState(**read_json(path / "state.json")),
        model=load_file(str(path / "model.safetensors")),
        best_model=load_file(str(best)) if best.exists() else None,
        optimizer=torch.load(path / "optimizer.pt", weights_only=True),
        tensors=load_file(str(path / "tensors.safetensors")),
    )


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
