"""How a pushed version is named in the store, in one place for the publisher and the reader.

A pushed version `v` (the Pusher's folder `serving/user_tower/<v>`) is published under the
store fingerprint `v<v>`; each publish of it is a store version `v<v>-<token>`. The commit
orders versions by that number: see `layout._COMMIT`.
"""

from __future__ import annotations

import re

_STORE_VERSION = re.compile(r"^v(\d+)-[0-9a-f]+$")
# the same pattern for Lua's string.match, used inside the commit script
STORE_VERSION_LUA = "^v(%d+)%-%x+$"


def store_fingerprint(version: int) -> str:
    """The store fingerprint of a pushed version: its store versions are `v<version>-<token>`."""
    return f"v{int(version)}"


def pushed_version_of(store_version: str | None) -> int | None:
    """The pushed version a store version holds, or None if it is not one of ours."""
    match = _STORE_VERSION.match(store_version or "")
    return int(match.group(1)) if match else None


def pushed_version_of_fingerprint(fingerprint: str) -> int | None:
    """The pushed version a fingerprint names (`v7` -> 7), or None for any other name."""
    return pushed_version_of(f"{fingerprint}-0")
