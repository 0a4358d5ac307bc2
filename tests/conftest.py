"""Shared fixtures: a real redis-server, the MovieLens 100k copy in shared data."""

from __future__ import annotations

import os

# the test process's start: TFMA recognises Keras 2 models only when tf.keras is tf_keras, and
# the flag is read when TensorFlow loads (the runners set it the same way)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, redis_server_path

# the repository's shared data sit beside the checkout: <repo>/../shared/data
ML100K_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server on a free loopback port; skips where none is installed."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    with RedisServer(tmp_path / "redis") as running:
        yield running


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """MovieLens 100k (its folder with u.data): $FINETOWER_ML100K, else the shared data copy;
    skips where it is absent."""
    path = Path(os.environ.get("FINETOWER_ML100K") or ML100K_DEFAULT)
    if not (path / "u.data").exists():
        pytest.skip(f"ml-100k not found at {path} (set FINETOWER_ML100K)")
    return path


@pytest.fixture(scope="session")
def pushed_run(tmp_path_factory) -> dict:
    """One small pipeline run per test session, for the serving tests: its output dir
    (`serving/` with both towers pushed as version 1 and `models.config`, `item_embeddings/1/`)
    and the data it trained on (tests.pipeline_helpers.small_recipe_files)."""
    from tests.pipeline_helpers import run_local_runner, small_recipe_files

    root = tmp_path_factory.mktemp("pushed_run")
    data = small_recipe_files(root / "data", rows=2000, items=200)
    out = root / "out"
    done = run_local_runner(
        "--train_data",
        str(data["train"]),
        "--val_data",
        str(data["eval"]),
        "--output_dir",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {"out": out, "serving": out / "serving", "data": data}
