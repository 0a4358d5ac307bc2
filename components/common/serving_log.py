"""The serving log's format, written by the recall service (serving/recall/skew_log.py) and
read by the pipeline's SkewCheck (components/validation/skew.py); no heavy imports.

    <folder>/serving-<start>-<seq>-v<version>.csv   header u1..uD, one user vector a row

A file appears complete or not at all (written under a hidden temporary name, renamed).
"""

from __future__ import annotations

from pathlib import Path

FILE_PREFIX = "serving-"
FILE_SUFFIX = ".csv"


def column_names(dim: int) -> list[str]:
    """`u1..uD`: a user vector's dimensions, as the log's header and the skew check name them."""
    return [f"u{j + 1}" for j in range(dim)]


def log_file_name(stem: str, version: int) -> str:
    return f"{FILE_PREFIX}{stem}-v{int(version)}{FILE_SUFFIX}"


def log_files(folder: str | Path) -> list[Path]:
    """The log's complete files, oldest first (names sort by start time and sequence)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.name.startswith(FILE_PREFIX) and p.suffix == FILE_SUFFIX
    )
