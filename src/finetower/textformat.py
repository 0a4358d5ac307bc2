"""The recipe's text format: one sample a line, `label,u_1..u_U,i_1..i_I`.

Parsing is the recipe's bottleneck, so lines are read in byte chunks of whole lines and
parsed by pyarrow's CSV reader, several chunks at once. Only when a chunk holds a bad
line does a plain Python pass over that chunk find the exact line and column to report
(or skip).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import mmap
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from finetower.errors import DataError

CHUNK_BYTES = 16 << 20
# chunks parsed at once, each by a single-threaded pyarrow reader: on 2 cores this ran
# ~25% faster than one multi-threaded reader, whose threads wait while it splits blocks
PARSE_WORKERS = 2
MAX_REPORTED_BAD_LINES = 5


@dataclass
class SampleChunk:
    """Samples as float32 arrays: `labels [n]`, `users [n, user_dim]`, `items [n, item_dim]`;
    optionally `user_ids [n]`, `item_ids [n]` (int64 rows of the data set's vocabularies),
    which models with ID embeddings need."""

    labels: np.ndarray
    users: np.ndarray
    items: np.ndarray
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def columns(self) -> dict[str, np.ndarray]:
        """The present columns by name."""
        named = {"label": self.labels, "user": self.users, "item": self.items}
        if self.user_ids is not None:
            named["user_id"] = self.user_ids
        if self.item_ids is not None:
            named["item_id"] = self.item_ids
        return named

    def take(self, rows: np.ndarray | slice) -> SampleChunk:
        """The same columns at `rows` (an index array or a slice)."""
        return SampleChunk(**{FIELDS[k]: v[rows] for k, v in self.columns().items()})

    @classmethod
    def concat(cls, chunks: list[SampleChunk]) -> SampleChunk:
        if len(chunks) == 1:
            return chunks[0]
        names = chunks[0].columns().keys()
        return cls(**{FIELDS[k]: np.concatenate([c.columns()[k] for c in chunks]) for k in names})


FIELDS = {
    "label": "labels",
    "user": "users",
    "item": "items",
    "user_id": "user_ids",
    "item_id": "item_ids",
}


@dataclass
class BadLines:
    """What `skip_bad_lines` skipped: a count and the first few (line, reason)."""

    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.count += 1
        if len(self.first) < MAX_REPORTED_BAD_LINES:
            self.first.append((error.line or 0, str(error.reason)))

    def summary(self, path: str | Path) -> str:
        if not self.count:
            return f"{path}: no bad lines"
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.first)
        return f"{path}: skipped {self.count} bad line(s), first: {shown}"


def count_fields(path: str | Path) -> int:
    """Return the number of comma-separated fields on the first line of `path`."""
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise DataError("file is empty" if not first else "first line is empty", path, 1)
    return first.count(b",") + 1


def split_dims(n_fields: int, user_dim: int | None, path: str | Path) -> tuple[int, int]:
    """Return (user_dim, item_dim) for lines of `n_fields` fields (label first)."""
    n_values = n_fields - 1
    if user_dim is None:
        if n_values < 2 or n_values % 2:
            raise DataError(
                f"{n_fields} fields per line: cannot split {n_values} values evenly into a "
                "user and an item vector; pass user_dim (--user-dim)",
                path,
                1,
            )
        user_dim = n_values // 2
    if not 0 < user_dim < n_values:
        raise DataError(f"user_dim {user_dim} does not fit {n_values} values per line", path, 1)
    return user_dim, n_values - user_dim


def _arrow_options(n_fields: int) -> tuple:
    names = [f"c{i}" for i in range(n_fields)]
    return (
        pacsv.ReadOptions(column_names=names, block_size=1 << 22, use_threads=False),
        pacsv.ParseOptions(quote_char=False, double_quote=False, ignore_empty_lines=False),
        pacsv.ConvertOptions(column_types={n: pa.float32() for n in names}),
    )


def _split_rows(rows: np.ndarray, user_dim: int) -> SampleChunk:
    """Row-major `[n, fields]` values as a chunk of contiguous label, user and item arrays."""
    return SampleChunk(
        labels=np.ascontiguousarray(rows[:, 0]),
        users=np.ascontiguousarray(rows[:, 1 : 1 + user_dim]),
        items=np.ascontiguousarray(rows[:, 1 + user_dim :]),
    )


def _table_to_chunk(table: pa.Table, user_dim: int, binary_labels: bool) -> SampleChunk | None:
    """The parsed table as a chunk, or None when a value is missing, not finite, or (with
    `binary_labels`) a label is not 0 or 1.

    Each pyarrow block becomes a row-major array in C++ (`to_tensor`), is checked while it
    is small enough to sit in cache, and is copied once into the chunk's arrays.
    """
    n, item_dim = table.num_rows, table.num_columns - 1 - user_dim
    chunk = SampleChunk(
        labels=np.empty(n, np.float32),
        users=np.empty((n, user_dim), np.float32),
        items=np.empty((n, item_dim), np.float32),
    )
    start = 0
    for batch in table.to_batches():
        rows = batch.to_tensor(null_to_nan=True, row_major=True).to_numpy()
        if not np.isfinite(rows).all():
            return None
        stop = start + len(rows)
        chunk.labels[start:stop] = rows[:, 0]
        chunk.users[start:stop] = rows[:, 1 : 1 + user_dim]
        chunk.items[start:stop] = rows[:, 1 + user_dim :]
        start = stop
    labels = chunk.labels
    if binary_labels and not ((labels == 0) | (labels == 1)).all():
        return None
    return chunk


def _parse_line(text: str, n_fields: int, binary_labels: bool) -> np.ndarray:
    """Parse one line exactly as the fast path would, raising DataError(reason, column)."""
    parts = text.split(",")
    if len(parts) != n_fields:
        raise DataError(f"expected {n_fields} fields, found {len(parts)}", column=None)
    values = np.empty(n_fields, dtype=np.float32)
    for j, part in enumerate(parts):
        try:
            value = float(part)
        except ValueError:
            raise DataError(f"{part.strip()!r} is not a number", column=j + 1) from None
        if not math.isfinite(value):
            raise DataError(f"value {part.strip()!r} is not finite", column=j + 1)
        values[j] = value
    if binary_labels and values[0] not in (0.0, 1.0):
        raise DataError(f"label {values[0]:g} is not 0 or 1", column=1)
    return values


def _parse_slowly(
    chunk: bytes,
    first_line: int,
    n_fields: int,
    path: Path,
    bad: BadLines | None,
    binary_labels: bool,
) -> np.ndarray:
    """Parse a chunk line by line; raise at the first bad line, or skip it into `bad`."""
    good = []
    for offset, raw in enumerate(chunk.split(b"\n")[: chunk.count(b"\n")]):
        line = first_line + offset
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        try:
            good.append(_parse_line(text, n_fields, binary_labels))
        except DataError as error:
            located = DataError(error.reason, path, line, error.column)
            if bad is None:
                raise located from None
            bad.add(located)
    return np.stack(good) if good else np.empty((0, n_fields), dtype=np.float32)


def _read_table(chunk: bytes, n_fields: int) -> pa.Table | None:
    """pyarrow's parse of a chunk of whole lines, or None when some line is malformed."""
    read, parse, convert = _arrow_options(n_fields)
    try:
        return pacsv.read_csv(pa.BufferReader(pa.py_buffer(chunk)), read, parse, convert)
    except pa.ArrowInvalid:
        return None


def _parse_chunk(
    chunk: bytes,
    table: pa.Table | None,
    first_line: int,
    n_fields: int,
    user_dim: int,
    path: Path,
    bad: BadLines | None,
    binary_labels: bool,
) -> tuple[SampleChunk, int]:
    """Return (samples, lines in the chunk): the parsed table checked, or the slow path,
    which finds the bad line."""
    if table is not None:
        samples = _table_to_chunk(table, user_dim, binary_labels)
        if samples is not None:
            # with no quoting and empty lines kept, every line is exactly one row
            return samples, len(samples)
    rows = _parse_slowly(chunk, first_line, n_fields, path, bad, binary_labels)
    return _split_rows(rows, user_dim), chunk.count(b"\n")


def _chunks(mapped: mmap.mmap, chunk_bytes: int) -> Iterator[bytes]:
    """Copies of about `chunk_bytes` of whole lines (the last may lack its newline)."""
    size, start = len(mapped), 0
    while start < size:
        end = mapped.find(b"\n", min(start + chunk_bytes, size) - 1)
        end = size if end < 0 else end + 1
        yield mapped[start:end]  # a copy: no view may outlive the mapping
        start = end


def _parse_whole_lines(raw: bytes, n_fields: int) -> tuple[bytes, pa.Table | None]:
    """The chunk ending in a newline, and its parse (None when some line is malformed)."""
    chunk = raw if raw.endswith(b"\n") else raw + b"\n"
    return chunk, _read_table(chunk, n_fields)


def iter_text_chunks(
    path: str | Path,
    user_dim: int | None = None,
    *,
    skip_bad_lines: bool = False,
    bad_lines: BadLines | None = None,
    digest: hashlib._Hash | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    binary_labels: bool = True,
    expect_fields: int | None = None,
) -> Iterator[SampleChunk]:
    """Yield the samples of a text file in chunks of about `chunk_bytes`, in file order.

    Raises DataError (file, line, column) at the first bad line unless `skip_bad_lines`,
    in which case bad lines are counted into `bad_lines`. `digest` (e.g. hashlib.sha256())
    is fed every byte of the file, so a caller gets the checksum without a second read.
    `binary_labels=False` accepts any number as the label (for inputs whose label is unused);
    `expect_fields` checks the line width a model needs.
    """
    path = Path(path)
    n_fields = count_fields(path)
    if expect_fields is not None and n_fields != expect_fields:
        raise DataError(
            f"expected {expect_fields} fields (label, user and item vector), found {n_fields}",
            path,
            1,
        )
    user_dim, item_dim = split_dims(n_fields, user_dim, path)
    bad = (bad_lines if bad_lines is not None else BadLines()) if skip_bad_lines else None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        next_line = 1
        # workers parse the next chunks (pyarrow, without the GIL) while this thread
        # hashes the current one in file order and turns it into checked row-major arrays
        with ThreadPoolExecutor(max_workers=PARSE_WORKERS) as parsers:
            raw_chunks = _chunks(mapped, chunk_bytes)
            in_flight: deque[tuple[bytes, Future]] = deque(
                (raw, parsers.submit(_parse_whole_lines, raw, n_fields))
                for raw in itertools.islice(raw_chunks, PARSE_WORKERS)
            )
            while in_flight:
                raw, parsed = in_flight.popleft()
                following = next(raw_chunks, None)
                if following is not None:
                    parsing = parsers.submit(_parse_whole_lines, following, n_fields)
                    in_flight.append((following, parsing))
                if digest is not None:
                    digest.update(raw)  # hashlib releases the GIL: the workers go on
                chunk, table = parsed.result()
                samples, n_lines = _parse_chunk(
                    chunk, table, next_line, n_fields, user_dim, path, bad, binary_labels
                )
                next_line += n_lines
                if len(samples):
                    yield samples


def read_text_samples(
    path: str | Path,
    user_dim: int | None = None,
    *,
    skip_bad_lines: bool = False,
    binary_labels: bool = True,
) -> SampleChunk:
    """Read a whole (small) text file into memory; for large files use a converted data set."""
    chunks = list(
        iter_text_chunks(path, user_dim, skip_bad_lines=skip_bad_lines, binary_labels=binary_labels)
    )
    if not chunks:
        raise DataError("no valid samples", path)
    return SampleChunk(
        labels=np.concatenate([c.labels for c in chunks]),
        users=np.concatenate([c.users for c in chunks]),
        items=np.concatenate([c.items for c in chunks]),
    )


def write_text_samples(
    path: str | Path,
    labels: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    *,
    append: bool = False,
) -> None:
    """Write samples in the recipe's text format (no header; floats in shortest form)."""
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    rows = np.hstack([labels, np.asarray(users, np.float32), np.asarray(items, np.float32)])
    columns = [pa.array(rows[:, j]) for j in range(rows.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(rows.shape[1])])
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "ab" if append else "wb") as f:
        pacsv.write_csv(table, f, options)
