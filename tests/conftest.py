"""Shared fixtures: a real redis-server, the MovieLens 100k copy in shared data."""

from __future__ import annotations

import os
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
