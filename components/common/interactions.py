"""Interaction logs: the table every stage reads, and its checks.

An interaction log is a pyarrow Table with columns
    user       string   a user id, shared by the source and the target domain
    item       string   an item id, shared likewise (it is the word2vec key)
    timestamp  int64    any integer clock (seconds, milliseconds, steps)
    weight     float32  optional; a column named `rating` is read as the weight
Rows need not be sorted: stages sort each user's rows by time, stably, so rows of one
user with equal timestamps keep their file order (and are counted, never dropped).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.common.errors import DataError

REQUIRED_COLUMNS = ("user", "item", "timestamp")
WEIGHT_COLUMNS = ("weight", "rating")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}


def is_interactions_table(path: str | Path) -> bool:
    """True for a CSV/TSV/Parquet file name (anything else is read as a sequences file)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def read_interactions(path: str | Path) -> pa.Table:
    """Read a CSV/TSV (with a header) or Parquet interaction log and check it."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"unknown table suffix {suffix!r}; expected one of {list(TABLE_SUFFIXES)}")
    try:
        if TABLE_SUFFIXES[suffix] is None:
            table = pq.read_table(path)
        else:
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=TABLE_SUFFIXES[suffix]),
                convert_options=pacsv.ConvertOptions(
                    column_types={"user": pa.string(), "item": pa.string()},
                    strings_can_be_null=True,
                ),
            )
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"cannot read the table: {error}", path) from None
    # a CSV's first data row is line 2 (after the header); a Parquet row has no line
    return check_interactions(table, path, first_line=2 if TABLE_SUFFIXES[suffix] else None)


def check_interactions(
    table: pa.Table, path: str | Path | None = None, *, first_line: int | None = None
) -> pa.Table:
    """Return the log with canonical columns and types, or raise a DataError naming the fault.

    `first_line` is the file line of row 0 (for CSV), so errors point at the line.
    """
    names = table.column_names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [c for c in names if c not in REQUIRED_COLUMNS + WEIGHT_COLUMNS]
    if missing or unknown:
        raise DataError(
            f"expected columns user, item, timestamp and optionally weight (or rating); "
            f"missing {missing}, unknown {unknown}",
            path,
        )
    if all(c in names for c in WEIGHT_COLUMNS):
        raise DataError("both 'weight' and 'rating' columns: keep one", path)
    if table.num_rows == 0:
        raise DataError("the interaction log is empty", path)
    columns = {
        "user": _as_type(table, "user", pa.string(), path),
        "item": _as_type(table, "item", pa.string(), path),
        "timestamp": _timestamps(table, path),
    }
    weight = next((c for c in WEIGHT_COLUMNS if c in names), None)
    if weight is not None:
        columns["weight"] = _as_type(table, weight, pa.float32(), path)
    for name, column in columns.items():
        empty = pc.is_null(column)
        if name in ("user", "item"):
            empty = pc.or_kleene(empty, pc.equal(column, ""))
        if pc.any(empty).as_py():
            row = int(pc.index(empty, True).as_py())
            line = None if first_line is None else first_line + row
            raise DataError(f"empty value in column {name!r} (row {row + 1})", path, line)
    return pa.table(columns)


def _as_type(table: pa.Table, name: str, type_: pa.DataType, path: str | Path | None):
    try:
        return table[name].cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"column {name!r} cannot be read as {type_}", path) from None


def _timestamps(table: pa.Table, path: str | Path | None) -> pa.ChunkedArray:
    column = table["timestamp"]
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return column.cast(pa.int64())
    if pa.types.is_floating(column.type):
        # safe cast: a fractional timestamp is an error, not silently floored
        try:
            return column.cast(pa.int64(), safe=True)
        except pa.ArrowInvalid:
            raise DataError(
                "timestamps must be integers (scale fractional clocks, e.g. to ms)", path
            ) from None
    if not pa.types.is_integer(column.type):
        raise DataError(f"timestamps must be integers, got {column.type}", path)
    return column.cast(pa.int64())
