"""Which tower versions TF Serving loads, and which may be deleted: pure decisions over what
the serving folder, the previous models.config, Redis and a rollback pin say.

A new version is named once its towers are pushed and its embeddings and index are published.
The config then names (`specific { versions }`):

    the new version                       once infra-validated
    the version the previous config       still served while the recall service moves over,
      served newest                       and the rollback target afterwards
    Redis `current`, a rollback pin       what the recall service is told to serve

Labels: TF Serving refuses a config whose label points at a version that is not AVAILABLE
yet, unless it runs with --allow_version_labels_for_unavailable_models ("Serving
Configuration", https://www.tensorflow.org/tfx/serving/serving_config, section "Assigning
labels to model versions": "...we only allow labels to be assigned to versions that are
already loaded and available for serving"; tensorflow_serving/model_servers/server_core.cc
checks this when it updates the labels). So by default `stable` names the newest version of
the previous config (loaded); with `labels_for_unavailable` `stable` names the new version and
`previous` the one before it.

Pruning never removes a version named by the new or the previous config, by Redis (current or
another kept store version), by the pin, or newer than the new one (a push in flight); of the
rest, none stays beyond the newest `keep` complete versions (`keep_versions`; 0 keeps all).
Both towers' folders of a version go together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import tensorflow as tf

from components.pusher import serving_layout
from components.pusher.serving_layout import PUSH_INFO, SAVED_MODEL, TOWERS

STABLE, PREVIOUS = "stable", "previous"


def _has(serving_dir: str, tower: str, version: int, name: str) -> bool:
    return tf.io.gfile.exists(os.path.join(serving_dir, tower, str(version), name))


def complete_versions(serving_dir: str) -> list[int]:
    """Versions whose two towers both hold `saved_model.pb` and the push record, ascending."""
    found = {v for t in TOWERS for v in serving_layout.versions(os.path.join(serving_dir, t))}
    return sorted(
        v
        for v in found
        if all(_has(serving_dir, t, v, n) for t in TOWERS for n in (SAVED_MODEL, PUSH_INFO))
    )


def orphan_versions(serving_dir: str, below: int) -> list[int]:
    """Versions under `below` that a crashed push left incomplete (a tower folder without
    `saved_model.pb` or its push record, or one tower only). Only older than the version being
    published: a higher number may be a push still being written."""
    complete = set(complete_versions(serving_dir))
    found = {v for t in TOWERS for v in serving_layout.versions(os.path.join(serving_dir, t))}
    return sorted(v for v in found if v < below and v not in complete)


def config_versions(config, serving_dir: str) -> tuple[list[int], dict[str, int]]:
    """(versions, labels) the user tower's entry of a models.config loads: `specific` lists
    them; `latest` (an older config) loads the newest N complete versions; `all` all."""
    if config is None:
        return [], {}
    entries = [c for c in config.model_config_list.config if c.name == TOWERS[0]]
    if not entries:
        return [], {}
    entry = entries[0]
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    complete = complete_versions(serving_dir)
    if choice == "specific":
        named = sorted(set(policy.specific.versions))
    elif choice == "all":
        named = complete
    else:  # latest, also TF Serving's default (latest 1)
        count = policy.latest.num_versions if choice == "latest" else 1
        named = complete[-max(count, 1) :]
    return named, dict(entry.version_labels)


@dataclass(frozen=True)
class Holders:
    """What names versions besides the configs: Redis and an operator's rollback pin."""

    redis_current: int | None = None
    redis_kept: frozenset[int] = frozenset()
    pinned: int | None = None


@dataclass
class Plan:
    """The config to write and the folders to delete, with why each version stays."""

    named: list[int]
    labels: dict[str, int]
    prune: list[int]
    orphans: list[int]
    why: dict[int, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "named": self.named,
            "labels": self.labels,
            "pruned": self.prune,
            "orphans_removed": self.orphans,
            "kept_because": {str(v): r for v, r in sorted(self.why.items())},
        }


def plan(
    new: int,
    complete: list[int],
    previous: tuple[list[int], dict[str, int]],
    holders: Holders,
    *,
    keep: int = 0,
    orphans: list[int] = (),
    labels_for_unavailable: bool = False,
) -> Plan:
    """The versions the new config names, its labels, and what may be pruned."""
    before, _ = previous
    served = max((v for v in before if v != new), default=None)
    why: dict[int, list[str]] = {}

    def hold(version: int | None, reason: str) -> None:
        if version is not None:
            why.setdefault(version, []).append(reason)

    hold(new, "the new version")
    hold(served, "served by the previous config (rollback target)")
    hold(holders.redis_current, "Redis current")
    hold(holders.pinned, "pinned by a rollback")
    named = sorted(v for v in why if v in complete or v == new)
    if labels_for_unavailable:
        labels = {STABLE: new, **({PREVIOUS: served} if served is not None else {})}
    else:
        labels = {STABLE: served} if served is not None else {}
    if holders.pinned is not None and holders.pinned in before and holders.pinned in complete:
        labels[STABLE] = holders.pinned  # a rollback: the pinned version is the stable one
    # a label on a version the config does not load is an error for TF Serving
    labels = {label: v for label, v in labels.items() if v in named}
    for version in before:
        hold(version, "named by the previous config")
    for version in holders.redis_kept:
        hold(version, "a kept Redis store version")
    for version in complete:
        if version > new:
            hold(version, "newer than the published version (a push in flight)")
    for version in complete[-keep:] if keep > 0 else complete:
        hold(version, f"among the newest {keep}" if keep > 0 else "keep_versions is 0: keep all")
    prune = [v for v in complete if v not in why]
    return Plan(named, labels, prune, [v for v in orphans if v not in why], why)


def delete_versions(serving_dir: str, versions: list[int]) -> None:
    """Delete both towers' folders of each version (user tower first: a reader that finds
    the item tower of a version without its user tower skips the version)."""
    for version in versions:
        for tower in TOWERS:
            path = os.path.join(serving_dir, tower, str(version))
            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)
