"""What a push produced, as typed custom properties of an artifact: the one way to write and
read them.

The Pusher records them on its PushedModel; ItemEmbeddings copies them onto its output, so
every later stage finds the exact towers of the version it works on from its own inputs,
never by editing another stage's path:

    pushed            int     1 when both towers were pushed (or already served), else 0
    pushed_version    int     the serving version of both towers
    user_tower_path   string  exact URI of `<serving_dir>/user_tower/<version>`
    item_tower_path   string  exact URI of `<serving_dir>/item_tower/<version>`
"""

from __future__ import annotations

from dataclasses import dataclass

from tfx import types

from components.common.errors import ArtifactError

PUSHED = "pushed"
VERSION = "pushed_version"
USER_TOWER = "user_tower_path"
ITEM_TOWER = "item_tower_path"


@dataclass(frozen=True)
class PushedTowers:
    """The towers of one pushed version: `<serving_dir>/{user,item}_tower/<version>`."""

    version: int
    user_tower_uri: str
    item_tower_uri: str


def record_towers(artifact: types.Artifact, towers: PushedTowers | None) -> None:
    """Write `towers` (None: nothing was pushed) onto `artifact`'s custom properties."""
    artifact.set_int_custom_property(PUSHED, int(towers is not None))
    if towers is None:
        return
    artifact.set_int_custom_property(VERSION, towers.version)
    artifact.set_string_custom_property(USER_TOWER, towers.user_tower_uri)
    artifact.set_string_custom_property(ITEM_TOWER, towers.item_tower_uri)


def pushed_towers(artifact: types.Artifact) -> PushedTowers | None:
    """The towers recorded on `artifact`, or None when nothing was pushed."""
    if not artifact.get_int_custom_property(PUSHED):
        return None
    towers = PushedTowers(
        version=artifact.get_int_custom_property(VERSION),
        user_tower_uri=artifact.get_string_custom_property(USER_TOWER),
        item_tower_uri=artifact.get_string_custom_property(ITEM_TOWER),
    )
    if not (towers.user_tower_uri and towers.item_tower_uri):
        raise ArtifactError(
            f"{artifact.type_name} {artifact.uri} says a version was pushed but does not "
            f"record both towers' URIs ({USER_TOWER}, {ITEM_TOWER})"
        )
    return towers
