"""Item catalogues: CSV `item_id,v_1..v_I` (no header) or word2vec text format.

Read in chunks by pyarrow (no Python loop per line); errors name the file, line and field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from components.common.errors import DataError
from components.common.paths import open_binary

BLOCK_BYTES = 4 << 20


def is_word2vec_text(path: str) -> bool:
    """word2vec text files start with a `COUNT DIM` line."""
    with open_binary(path) as f:
        first = f.readline().split()
    return len(first) == 2 and all(part.isdigit() for part in first)


def iter_catalogue(path: str, item_dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(ids [n] bytes, vectors [n, item_dim] float32)` chunks of the catalogue."""
    word2vec = is_word2vec_text(path)
    delimiter = " " if word2vec else ","
    names = ["item_id"] + [f"v{j}" for j in range(item_dim)]
    read = pacsv.ReadOptions(
        column_names=names, block_size=BLOCK_BYTES, skip_rows=1 if word2vec else 0
    )
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False)
    convert = pacsv.ConvertOptions(
        column_types={"item_id": pa.binary(), **{n: pa.float32() for n in names[1:]}}
    )
    first_line = 2 if word2vec else 1
    with open_binary(path) as stream:
        try:
            reader = pacsv.open_csv(stream, read, parse, convert)
            for batch in reader:
                vectors = batch.select(names[1:]).to_tensor(null_to_nan=True, row_major=True)
                vectors = vectors.to_numpy()
                finite = np.isfinite(vectors).all(axis=1)
                if not finite.all():
                    row = int(np.argmax(~finite))
                    field = int(np.argmax(~np.isfinite(vectors[row]))) + 2
                    raise DataError(
                        "NaN, infinity or an empty value", path, first_line + row, field
                    )
                first_line += len(vectors)
                yield batch.column(0).to_numpy(zero_copy_only=False), vectors
        except pa.ArrowInvalid as error:
            raise DataError(f"not a catalogue of {item_dim}-d vectors: {error}", path) from None


def iter_distinct_catalogue(path: str, item_dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`iter_catalogue`'s chunks with each id once: its first line wins (as a lookup by id in
    the catalogue finds it), and the lines dropped are counted in a warning. Streams: only the
    set of ids seen is kept."""
    seen: set[bytes] = set()
    repeated = 0
    for ids, vectors in iter_catalogue(path, item_dim):
        keep = np.ones(len(ids), bool)
        for row, item in enumerate(ids):
            if item in seen:
                keep[row] = False
            else:
                seen.add(item)
        repeated += int((~keep).sum())
        if keep.any():
            yield ids[keep], vectors[keep]
    if repeated:
        logging.warning(
            "%s: %d line(s) repeat an earlier line's item id; each id keeps its first line",
            path,
            repeated,
        )
