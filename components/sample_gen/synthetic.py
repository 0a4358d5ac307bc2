"""A seeded synthetic two-domain world where transfer from the big domain helps measurably.

Users and items share ids across domains. Each item has a unit latent vector `v` and each
user a unit taste `u` (dimension `latent_dim`). A user picks items without replacement
with probability softmax(u·v / temperature + bias), where `bias` is a per-item popularity.

- source (the big app): `source_per_user` picks per user on average, over the whole
  time span, with popularity `bias_source`.
- target (the new placement): `target_per_user` picks per user on average (at least one),
  only for a `target_users` fraction of users, in the last `target_span` of time, with
  its own independent popularity `bias_target` (differently biased), and a taste
      u_target = agreement · u + sqrt(1 - agreement²) · z,   z a fresh unit vector.
`agreement` = 1: the domains share tastes and pretrained vectors transfer fully;
`agreement` = 0: target tastes are independent of source behaviour, transfer cannot help.
Timestamps are distinct integers, so no user has two events at the same time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

USER_CHUNK = 1024
TIME_SPAN = 10**9


@dataclass(frozen=True)
class WorldConfig:
    """Size and shape of a synthetic world; every random draw derives from `seed`."""

    n_users: int = 2000
    n_items: int = 1000
    latent_dim: int = 8
    source_per_user: float = 40.0
    target_per_user: float = 4.0
    target_users: float = 1.0
    target_span: float = 0.3
    agreement: float = 0.8
    temperature: float = 0.05
    popularity_sigma: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.agreement <= 1.0:
            raise ValueError(f"agreement must be in [0, 1], got {self.agreement}")
        if not 0.0 < self.target_users <= 1.0 or not 0.0 < self.target_span <= 1.0:
            raise ValueError("target_users and target_span must be in (0, 1]")
        if self.n_users < 1 or self.n_items < 2 or self.latent_dim < 1:
            raise ValueError("need at least 1 user, 2 items and a latent dimension of 1")


@dataclass
class SyntheticWorld:
    """The two logs and the ground truth behind them."""

    source: pa.Table
    target: pa.Table
    user_tastes: np.ndarray  # [n_users, latent_dim], source-domain tastes
    target_tastes: np.ndarray  # [n_users, latent_dim]
    item_factors: np.ndarray  # [n_items, latent_dim]
    config: WorldConfig


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _pick_items(
    rng: np.random.Generator,
    tastes: np.ndarray,
    item_factors: np.ndarray,
    bias: np.ndarray,
    counts: np.ndarray,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (user rows, item rows): `counts[u]` distinct items per user, by Gumbel top-k."""
    users, items = [], []
    for start in range(0, len(tastes), USER_CHUNK):
        stop = min(start + USER_CHUNK, len(tastes))
        chunk_counts = counts[start:stop]
        k = int(chunk_counts.max(initial=0))
        if k == 0:
            continue
        keys = (tastes[start:stop] @ item_factors.T / temperature + bias).astype(np.float32)
        # Gumbel noise -log(-log U) in float32: the same law as rng.gumbel, at half the cost
        with np.errstate(divide="ignore"):  # U = 0 gives -inf: never picked
            keys -= np.log(-np.log(rng.random(keys.shape, dtype=np.float32)))
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), 1), 1)
        keep = np.arange(k) < chunk_counts[:, None]
        users.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        items.append(top[keep])
    return np.concatenate(users), np.concatenate(items)


def _log(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, start: int) -> pa.Table:
    """Give events random distinct times in [start, TIME_SPAN), sorted by (user, time)."""
    times = start + rng.choice(TIME_SPAN - start, size=len(users), replace=False)
    order = np.lexsort((times, users))
    return pa.table(
        {
            "user": pa.array(np.char.add("u", users[order].astype(str))),
            "item": pa.array(np.char.add("i", items[order].astype(str))),
            "timestamp": pa.array(times[order].astype(np.int64)),
        }
    )


def synthetic_world(config: WorldConfig | None = None, **overrides: object) -> SyntheticWorld:
    """Generate a world: `synthetic_world(agreement=0.5, seed=3)` or from a WorldConfig."""
    config = WorldConfig(**{**asdict(config or WorldConfig()), **overrides})
    rng = np.random.default_rng(config.seed)
    items = _unit_rows(rng, config.n_items, config.latent_dim)
    tastes = _unit_rows(rng, config.n_users, config.latent_dim)
    fresh = _unit_rows(rng, config.n_users, config.latent_dim)
    a = config.agreement
    target_tastes = a * tastes + np.sqrt(1.0 - a * a) * fresh
    target_tastes /= np.linalg.norm(target_tastes, axis=1, keepdims=True)
    bias_source = rng.normal(0.0, config.popularity_sigma, config.n_items)
    bias_target = rng.normal(0.0, config.popularity_sigma, config.n_items)

    max_items = config.n_items
    source_counts = np.clip(rng.poisson(config.source_per_user, config.n_users), 2, max_items)
    in_target = rng.random(config.n_users) < config.target_users
    target_counts = np.clip(rng.poisson(config.target_per_user, config.n_users), 1, max_items)
    target_counts = np.where(in_target, target_counts, 0)

    source = _pick_items(rng, tastes, items, bias_source, source_counts, config.temperature)
    target = _pick_items(rng, target_tastes, items, bias_target, target_counts, config.temperature)
    target_start = int(TIME_SPAN * (1.0 - config.target_span))
    return SyntheticWorld(
        source=_log(rng, *source, start=0),
        target=_log(rng, *target, start=target_start),
        user_tastes=tastes,
        target_tastes=target_tastes,
        item_factors=items,
        config=config,
    )
