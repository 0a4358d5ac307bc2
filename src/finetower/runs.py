"""A run directory: `model.safetensors` + `config.json` (architecture, fingerprint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from finetower.artifacts import atomic_path, read_json, tensors_fingerprint, write_json
from finetower.errors import ArtifactError
from finetower.model import ModelConfig, TwoTowerModel, count_parameters

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of the weights: what names a model version everywhere downstream."""
    return tensors_fingerprint({k: v.detach().cpu().numpy() for k, v in state.items()})


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def save_run(run_dir: str | Path, model: TwoTowerModel, extra: dict[str, Any] | None = None) -> str:
    """Write the model's weights and config.json into `run_dir`; return its fingerprint."""
    run_dir = Path(run_dir)
    state = model.state_dict()
    fingerprint = state_fingerprint(state)
    save_weights(run_dir / MODEL_FILE, state)
    config = {
        "format": "finetower.run/1",
        "model": model.config.to_dict(),
        "parameters": count_parameters(model),
        "fingerprint": fingerprint,
    }
    config.update(extra or {})
    write_json(run_dir / CONFIG_FILE, config)
    return fingerprint


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> TwoTowerModel:
    """Load a trained model from a run directory, in eval mode, checking its fingerprint."""
    run_dir = Path(run_dir)
    config_path, weights_path = run_dir / CONFIG_FILE, run_dir / MODEL_FILE
    for needed in (config_path, weights_path):
        if not needed.exists():
            raise ArtifactError(f"{run_dir} is not a finetower run: {needed.name} is missing")
    config = read_json(config_path)
    model = TwoTowerModel(ModelConfig.from_dict(config["model"]))
    state = load_file(str(weights_path))
    if state_fingerprint(state) != config["fingerprint"]:
        raise ArtifactError(
            f"{weights_path} does not match the fingerprint in {config_path}: "
            "the run directory holds weights from another model"
        )
    model.load_state_dict(state)
    return model.to(device).eval()


def run_fingerprint(run_dir: str | Path) -> str:
    return read_json(Path(run_dir) / CONFIG_FILE)["fingerprint"]
