"""MovieLens ratings as an interaction log, read from a copy the user downloaded.

Nothing is downloaded here. Get the archives from https://grouplens.org/datasets/movielens/
(`ml-100k.zip`, `ml-1m.zip`), unzip them, and pass the folder or the ratings file:
    ml-100k  u.data        user<TAB>item<TAB>rating<TAB>timestamp
    ml-1m    ratings.dat   user::item::rating::timestamp
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from components.common.errors import DataError

RATING_FILES = ("u.data", "ratings.dat")
_COLUMNS = ["user", "item", "rating", "timestamp"]
_TYPES = {"user": pa.string(), "item": pa.string(), "rating": pa.float32(), "timestamp": pa.int64()}


def load_movielens(path: str | Path) -> pa.Table:
    """Return ratings as a log (user, item, timestamp, rating) from ml-100k or ml-1m.

    `path` is the unzipped folder or its ratings file (`u.data` or `ratings.dat`).
    """
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in RATING_FILES if (path / name).exists()]
        if not found:
            raise DataError(f"no MovieLens ratings file ({' or '.join(RATING_FILES)}) here", path)
        path = found[0]
    if not path.exists():
        raise DataError("file not found", path)
    if path.name == "ratings.dat":
        # '::' is not a single-character delimiter; ids and ratings never hold ':'
        data = pa.py_buffer(path.read_bytes().replace(b"::", b"\t"))
    elif path.name == "u.data":
        data = pa.py_buffer(path.read_bytes())
    else:
        raise DataError(f"expected a file named one of {RATING_FILES}", path)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=_COLUMNS),
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(column_types=_TYPES),
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"not a MovieLens ratings file: {error}", path) from None
    return table.select(["user", "item", "timestamp", "rating"])
