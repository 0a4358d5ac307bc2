"""The pin file: which pushed version an operator's rollback holds in service.

    <serving_dir>/pinned_version.json   {"version": N, "store_version": "vN-…" | null, "at": …}

Redis' pin (`finetower:pin`) holds `current`; this file says the same to whoever writes the
served `models.config` (it must keep version N named while the file exists) and to a recall
service that runs without Redis (it serves N instead of the newest complete version).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from components.common.errors import ArtifactError

PIN_FILE = "pinned_version.json"


def write_pin(serving_dir: str | Path, version: int, store_version: str | None = None) -> Path:
    """Write the pin atomically (a reader sees the old file or the new one, never half)."""
    path = Path(serving_dir) / PIN_FILE
    body = {
        "version": int(version),
        "store_version": store_version,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    partial = path.with_name(f".{PIN_FILE}.{os.getpid()}")
    partial.write_text(json.dumps(body) + "\n")
    os.replace(partial, path)
    return path


def read_pin(serving_dir: str | Path | None) -> int | None:
    """The pinned pushed version, or None when nothing is pinned."""
    if serving_dir is None:
        return None
    path = Path(serving_dir) / PIN_FILE
    try:
        body: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: not a pin file ({error})") from None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ArtifactError(f"{path}: field 'version' must be a non-negative integer")
    return version


def clear_pin(serving_dir: str | Path) -> bool:
    """Remove the pin file; whether there was one."""
    try:
        (Path(serving_dir) / PIN_FILE).unlink()
    except FileNotFoundError:
        return False
    return True
