"""The recipe's CSV: one sample a line, `label,u_1..u_U,i_1..i_I`, no header.

Lines are read in chunks of whole lines and parsed by pyarrow's CSV reader (two chunks at
once, each single-threaded: pyarrow releases the GIL). Only a chunk that holds a bad line is
parsed again line by line, to name the file, the line and the field. Each checked chunk is
encoded to tf.Examples by tfx-bsl's C++ encoder: `label` int64, `user_vector` and
`item_vector` float32 of fixed length, `item_id` bytes (a stable hash of the parsed float32
item vector; catalogue ids are joined when the item embeddings are computed).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from components.common.errors import DataError
from components.common.paths import open_binary

CHUNK_BYTES = 8 << 20
PARSE_WORKERS = 2

LABEL = "label"
USER_VECTOR = "user_vector"
ITEM_VECTOR = "item_vector"
ITEM_ID = "item_id"
USER_ID = "user_id"


@dataclass
class RecipeChunk:
    """Parsed samples: `labels [n]` int64, `users [n, U]` and `items [n, I]` float32, and
    `first_line`, the 1-based line number of row 0 in its file."""

    labels: np.ndarray
    users: np.ndarray
    items: np.ndarray
    first_line: int

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> RecipeChunk:
        return RecipeChunk(self.labels[rows], self.users[rows], self.items[rows], self.first_line)


# -- stable ids -------------------------------------------------------------------------------

_HASH_SEED = 0x9E3779B97F4A7C15
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _coefficients(width: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers, one per 32-bit word of a row (the same on every machine)."""
    state = np.uint64(_HASH_SEED)
    out = np.empty(width, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):  # splitmix64: a few dozen words, not per row
            state = state + np.uint64(0x9E3779B97F4A7C15)
            z = state
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out[j] = (z ^ (z >> np.uint64(31))) | np.uint64(1)
    return out


def row_hashes(rows: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash of each row's float32 bits: `rows [n, d]` -> uint64 `[n]`."""
    words = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = words @ _coefficients(words.shape[1])  # wraps mod 2**64, as wanted
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


def vector_ids(vectors: np.ndarray) -> np.ndarray:
    """Ids for vectors without a catalogue id: 16 hex digits of `row_hashes` (bytes `[n]`)."""
    big_endian = row_hashes(vectors).astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(_HEX[big_endian]).view("S16").ravel()


# -- parsing ----------------------------------------------------------------------------------


def _line_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """Chunks of about `chunk_bytes` holding whole lines, each ending in a newline."""
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += stream.readline()
            if not block.endswith(b"\n"):
                block += b"\n"  # the last line of a file without a final newline
        yield block


def _read_options(n_fields: int) -> tuple:
    names = [f"f{i}" for i in range(n_fields)]
    return (
        pacsv.ReadOptions(column_names=names, block_size=1 << 22, use_threads=False),
        pacsv.ParseOptions(quote_char=False, double_quote=False, ignore_empty_lines=False),
        pacsv.ConvertOptions(column_types={n: pa.float32() for n in names}),
    )


def _fast_parse(chunk: bytes, n_fields: int) -> np.ndarray | None:
    """Row-major float32 `[lines, n_fields]`, or None when some line is malformed."""
    try:
        table = pacsv.read_csv(pa.BufferReader(chunk), *_read_options(n_fields))
    except pa.ArrowInvalid:
        return None
    rows = np.empty((table.num_rows, n_fields), np.float32)
    start = 0
    for batch in table.to_batches():
        block = batch.to_tensor(null_to_nan=True, row_major=True).to_numpy()
        rows[start : start + len(block)] = block
        start += len(block)
    return rows


def _parse_line(text: str, n_fields: int) -> list[float]:
    """Parse one line as the fast path would; raise DataError(reason, column=field)."""
    parts = text.split(",")
    if len(parts) != n_fields:
        raise DataError(f"expected {n_fields} fields, found {len(parts)}")
    values = []
    for j, part in enumerate(parts):
        try:
            value = float(part)
        except ValueError:
            raise DataError(f"{part.strip()!r} is not a number", column=j + 1) from None
        if not math.isfinite(value):
            raise DataError(f"{part.strip()!r} is NaN or infinity", column=j + 1)
        values.append(value)
    if values[0] not in (0.0, 1.0):
        raise DataError(f"label {parts[0].strip()!r} is not 0 or 1", column=1)
    return values


def _first_bad_line(chunk: bytes, n_fields: int) -> tuple[int, DataError]:
    """(0-based offset of the first bad line in `chunk`, its error), by a per-line pass that
    runs only on a chunk the fast path refused."""
    for offset, raw in enumerate(chunk.split(b"\n")[:-1]):
        try:
            _parse_line(raw.decode("utf-8", errors="replace").rstrip("\r"), n_fields)
        except DataError as error:
            return offset, error
    raise AssertionError("the fast path refused a chunk whose lines all parse")


def _check(rows: np.ndarray) -> int | None:
    """Index of the first row holding NaN/infinity or a label other than 0/1, else None."""
    bad = ~np.isfinite(rows).all(axis=1) | ((rows[:, 0] != 0) & (rows[:, 0] != 1))
    return int(np.argmax(bad)) if bad.any() else None


def iter_recipe_chunks(
    path: str, user_dim: int, item_dim: int, *, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[RecipeChunk]:
    """Yield the checked samples of one recipe CSV file, in file order.

    Raises DataError naming the file, line and field at the first bad line: wrong number of
    fields, a value that is not a number, NaN or infinity, a label other than 0/1; and for an
    empty file.
    """
    n_fields = 1 + user_dim + item_dim
    next_line = 1
    with open_binary(path) as stream, ThreadPoolExecutor(PARSE_WORKERS) as parsers:
        chunks = _line_chunks(stream, chunk_bytes)
        in_flight: deque[tuple[bytes, Future]] = deque(
            (c, parsers.submit(_fast_parse, c, n_fields))
            for c in itertools.islice(chunks, PARSE_WORKERS)
        )
        while in_flight:
            chunk, parsing = in_flight.popleft()
            following = next(chunks, None)
            if following is not None:
                in_flight.append((following, parsers.submit(_fast_parse, following, n_fields)))
            rows = parsing.result()
            if rows is None or _check(rows) is not None:
                offset, error = _first_bad_line(chunk, n_fields)
                raise DataError(error.reason, path, next_line + offset, error.column)
            yield RecipeChunk(
                labels=rows[:, 0].astype(np.int64),
                users=np.ascontiguousarray(rows[:, 1 : 1 + user_dim]),
                items=np.ascontiguousarray(rows[:, 1 + user_dim :]),
                first_line=next_line,
            )
            next_line += len(rows)
    if next_line == 1:
        raise DataError("file is empty", path)


# -- encoding ---------------------------------------------------------------------------------


def _lists(values: np.ndarray, width: int) -> pa.ListArray:
    n = len(values) // width if width else 0
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values))


def to_record_batch(chunk: RecipeChunk) -> pa.RecordBatch:
    """The chunk as the Arrow columns of its tf.Examples (each feature a list column)."""
    users, items = chunk.users, chunk.items
    return pa.RecordBatch.from_arrays(
        [
            _lists(chunk.labels, 1),
            _lists(users.ravel(), users.shape[1]),
            _lists(items.ravel(), items.shape[1]),
            _lists(vector_ids(items), 1),
        ],
        [LABEL, USER_VECTOR, ITEM_VECTOR, ITEM_ID],
    )


def encode_examples(chunk: RecipeChunk) -> list[bytes]:
    """Serialized tf.Examples of the chunk's samples, in order."""
    from tfx_bsl.coders import example_coder

    return example_coder.RecordBatchToExamplesEncoder().encode(to_record_batch(chunk))


def hash_buckets(chunk: RecipeChunk, total_buckets: int) -> np.ndarray:
    """A stable bucket in `[0, total_buckets)` for each sample (by its values), for splits."""
    rows = np.hstack([chunk.labels[:, None].astype(np.float32), chunk.users, chunk.items])
    return ((row_hashes(rows) >> np.uint64(16)) % np.uint64(total_buckets)).astype(np.int64)
