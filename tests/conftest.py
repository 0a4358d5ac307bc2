"""Shared fixtures: small generated sample files with a learnable signal."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetower.generate import write_generated_text


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Conversions made while training on text go to a per-session cache, not ~/.cache."""
    monkeypatch.setenv("FINETOWER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train (6,000 rows) and val (2,000 rows) in the recipe's text format, 128/128."""
    root = tmp_path_factory.mktemp("samples")
    return {
        "train": write_generated_text(root / "train.txt", 6000, seed=1),
        "val": write_generated_text(root / "val.txt", 2000, seed=2),
    }
