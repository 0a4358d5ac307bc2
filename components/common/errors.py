"""Errors a user can act on: each names where the bad input is."""

from __future__ import annotations

from pathlib import Path


class FinetowerError(Exception):
    """Base class for errors caused by the user's input or artifacts."""


class DataError(FinetowerError, ValueError):
    """Bad input data, located by file, line (1-based) and field (1-based column)."""

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"field {column}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def __reduce__(self):
        # Beam workers pickle exceptions across processes: keep the location
        return (type(self), (self.reason, self.path, self.line, self.column))


class ArtifactError(FinetowerError):
    """A model, index or data directory is missing, incomplete or inconsistent."""
