"""Moving `current` by hand: roll back to a kept version (optionally pinning it), unpin."""

from __future__ import annotations

from serving.store.layout import _SWITCH, Keys, VersionNotFound, connect, guard
from serving.store.naming import store_fingerprint


def _rollback_target(kept: list[str], current: str | None, to: str | int | None) -> str:
    if to is None:
        older = kept[kept.index(current) + 1 :] if current in kept else []
        if not older:
            raise VersionNotFound(
                f"no version older than {current} is kept: nothing to roll back to"
            )
        return older[0]
    if isinstance(to, int):
        to = store_fingerprint(to)
    matches = [v for v in kept if v == to or v.rsplit("-", 1)[0] == to]
    if not matches:
        raise VersionNotFound(f"{to!r} is not a kept version; kept: {kept}")
    return matches[0]


def rollback(
    redis_url: str, to: str | int | None = None, *, pin: bool = False
) -> dict[str, str | None]:
    """Make a kept version current: the one published before the current one, or `to`.

    `to` is a store version, a model fingerprint (its newest kept version) or a pushed version
    number. `pin=True` also pins `current` there: no publish moves it until `unpin`; without
    it a later, newer publish does. Returns `{"previous": ..., "current": ...}`.
    """
    with guard(redis_url):
        client = connect(redis_url)
        try:
            kept = [v.decode() for v in client.zrevrange(Keys.versions, 0, -1)]
            current = client.get(Keys.current)
            target = _rollback_target(kept, current.decode() if current else None, to)
            switch = client.register_script(_SWITCH)
            keys = [Keys.current, Keys.versions, Keys.manifest(target), Keys.pin]
            previous = switch(keys=keys, args=[target, int(pin)])
        finally:
            client.close()
    return {"previous": previous.decode() if previous else None, "current": target}


def unpin(redis_url: str) -> str | None:
    """Let publishes move `current` again; the version that was pinned, or None."""
    with guard(redis_url):
        client = connect(redis_url)
        try:
            pinned = client.getdel(Keys.pin)
        finally:
            client.close()
    return pinned.decode() if pinned is not None else None
