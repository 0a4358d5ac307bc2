"""Converted sample data sets: float32 columns on disk, memory-mapped, read shuffled in windows.

Layout of a data set directory:
    manifest.json   rows, user_dim, item_dim, columns, the source's sha256, skipped lines
    label.f32       [rows]            0.0 / 1.0
    user.f32        [rows, user_dim]  row-major
    item.f32        [rows, item_dim]  row-major
    user_id.i64, item_id.i64          optional: rows of user_vocab.txt / item_vocab.txt

Training never loads it whole: each epoch visits fixed-size blocks in a seeded random
order, `WINDOW_BLOCKS` blocks at a time, and shuffles the rows of each window. The order
depends only on (seed, epoch), so a run can resume at any batch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetower.artifacts import atomic_dir, read_json, write_json
from finetower.errors import ArtifactError, DataError
from finetower.textformat import (
    FIELDS,
    BadLines,
    SampleChunk,
    count_fields,
    iter_text_chunks,
    split_dims,
)

FORMAT = "finetower.samples/1"
BLOCK_ROWS = 8192
WINDOW_BLOCKS = 16
GATHER_ROWS = 16_384  # rows copied out of the maps at a time (128 batches of 128)
SYNC_EVERY_BYTES = 64 << 20


@dataclass
class Batch:
    """users [batch, user_dim], items [batch, item_dim], labels [batch]; for data sets
    with ids also user_ids, item_ids [batch] (int64 vocabulary rows)."""

    users: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor
    user_ids: torch.Tensor | None = None
    item_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


COLUMN_DTYPES = {
    "label": np.float32,
    "user": np.float32,
    "item": np.float32,
    "user_id": np.int64,
    "item_id": np.int64,
}


def column_file(name: str) -> str:
    return f"{name}.{'i64' if COLUMN_DTYPES[name] == np.int64 else 'f32'}"


class DatasetWriter:
    """Appends sample chunks to a new data set; `close` writes the manifest last.

    Written data is flushed to disk in the background every `SYNC_EVERY_BYTES`, so the
    final fsync that makes the data set durable finds little left to write: the disk
    works while the parser does.
    """

    def __init__(self, directory: Path, first: SampleChunk) -> None:
        self.directory = directory
        self.user_dim, self.item_dim = first.users.shape[1], first.items.shape[1]
        self.names = list(first.columns())
        self.rows = 0
        self._files = {
            n: open(directory / column_file(n), "wb")  # noqa: SIM115 - closed in close()
            for n in self.names
        }
        self._syncer = ThreadPoolExecutor(max_workers=1)
        self._syncs: list[Future] = []
        self._unsynced = 0

    def write(self, chunk: SampleChunk) -> None:
        if chunk.users.shape[1] != self.user_dim or chunk.items.shape[1] != self.item_dim:
            raise DataError(
                f"chunk has user/item sizes {chunk.users.shape[1]}/{chunk.items.shape[1]}, "
                f"data set has {self.user_dim}/{self.item_dim}"
            )
        columns = chunk.columns()
        if list(columns) != self.names:
            raise DataError(f"chunk has columns {list(columns)}, data set has {self.names}")
        for name, array in columns.items():
            data = np.ascontiguousarray(array, dtype=COLUMN_DTYPES[name])
            self._files[name].write(memoryview(data).cast("B"))  # no copy
            self._unsynced += data.nbytes
        self.rows += len(chunk)
        if self._unsynced >= SYNC_EVERY_BYTES and all(s.done() for s in self._syncs):
            for f in self._files.values():
                f.flush()  # hand the kernel what Python buffered; the sync runs meanwhile
            self._syncs.append(self._syncer.submit(self._sync))
            self._unsynced = 0

    def _sync(self) -> None:
        for f in self._files.values():
            os.fdatasync(f.fileno())

    def close(self, **manifest_extra: object) -> None:
        self._syncer.shutdown(wait=True)
        for sync in self._syncs:
            sync.result()  # a failed background sync fails the data set
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        manifest = {
            "format": FORMAT,
            "rows": self.rows,
            "user_dim": self.user_dim,
            "item_dim": self.item_dim,
            "columns": self.names,
            **manifest_extra,
        }
        write_json(self.directory / "manifest.json", manifest)


def write_dataset(
    out_dir: str | Path,
    chunks: Iterator[SampleChunk] | list[SampleChunk],
    manifest_extra: Callable[[], dict] | None = None,
    *,
    vocabularies: dict[str, list[str]] | None = None,
) -> SampleDataset:
    """Write chunks of samples as a converted data set (atomically) and open it.

    `manifest_extra` is called after the last chunk, so it can report what reading found.
    `vocabularies` ({"user": ids, "item": ids}) name the rows that id columns point at;
    they are written as `user_vocab.txt` / `item_vocab.txt`, one id a line.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        writer: DatasetWriter | None = None
        for chunk in chunks:
            if writer is None:
                writer = DatasetWriter(tmp, chunk)
            writer.write(chunk)
        if writer is None or writer.rows == 0:
            raise DataError("no samples to write", out_dir)
        for side, ids in (vocabularies or {}).items():
            if any("\n" in str(i) for i in ids):
                raise DataError(f"{side} ids must not contain newlines", out_dir)
            (tmp / f"{side}_vocab.txt").write_text("".join(f"{i}\n" for i in ids))
        writer.close(**(manifest_extra() if manifest_extra else {}))
    return SampleDataset(out_dir)


def convert_text(
    text_path: str | Path,
    out_dir: str | Path,
    user_dim: int | None = None,
    *,
    skip_bad_lines: bool = False,
) -> tuple[SampleDataset, BadLines]:
    """Convert a text sample file into a data set; return it and what was skipped.

    The source's sha256, computed while reading, goes into the manifest.
    """
    text_path = Path(text_path)
    digest = hashlib.sha256()
    bad = BadLines()
    chunks = iter_text_chunks(
        text_path, user_dim, skip_bad_lines=skip_bad_lines, bad_lines=bad, digest=digest
    )

    def manifest_extra() -> dict:
        return {
            "source": {
                "path": str(text_path.resolve()),
                "bytes": text_path.stat().st_size,
                "sha256": digest.hexdigest(),
            },
            "skipped_lines": bad.count,
        }

    return write_dataset(out_dir, chunks, manifest_extra), bad


def cache_dir() -> Path:
    """Where text files converted for training are kept: $FINETOWER_CACHE or ~/.cache."""
    root = os.environ.get("FINETOWER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "finetower"


def cached_conversion(
    text_path: str | Path, user_dim: int | None = None, *, skip_bad_lines: bool = False
) -> SampleDataset:
    """Return the converted data set of a text file, converting it once per checksum.

    Data sets are kept under `datasets/<sha256 of the text>`. A file seen before is found
    by its path, size, modification time and inode (`sources/`, as make and git do), so a
    multi-GB text is not hashed again on every run; a new file is hashed while it is
    converted, not in a pass of its own.
    """
    text_path = Path(text_path).resolve()
    suffix = f"-u{user_dim}" if user_dim else ""
    suffix += "-skip" if skip_bad_lines else ""
    datasets, sources = cache_dir() / "datasets", cache_dir() / "sources"
    stat = text_path.stat()
    seen = f"{text_path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    source_file = sources / f"{hashlib.sha256(seen.encode()).hexdigest()[:32]}.json"
    if source_file.exists():
        target = datasets / f"{read_json(source_file)['sha256']}{suffix}"
        if (target / "manifest.json").exists():
            return SampleDataset(target)
    converting = datasets / f".converting-{os.getpid()}-{source_file.stem}{suffix}"
    dataset, _ = convert_text(text_path, converting, user_dim, skip_bad_lines=skip_bad_lines)
    key = dataset.manifest["source"]["sha256"]
    target = datasets / f"{key}{suffix}"
    try:
        os.replace(converting, target)
    except OSError:  # the same content was converted already (another path, another process)
        shutil.rmtree(converting, ignore_errors=True)
    write_json(source_file, {"path": str(text_path), "sha256": key})
    return SampleDataset(target)


class BatchSource:
    """What training reads: `iter_chunks` in a (seed, epoch) order, cut into batches."""

    def iter_chunks(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[SampleChunk]:
        raise NotImplementedError

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        device: str | torch.device = "cpu",
        read_ahead: bool = False,
    ) -> Iterator[Batch]:
        """Yield batches of `batch_size` (the last may be smaller), from batch `start_batch`.

        `read_ahead` reads the next chunk in a worker thread while the caller works: worth
        it when the caller leaves a core idle (training at batch 128 uses one thread).
        """
        chunks = self.iter_chunks(shuffle=shuffle, seed=seed, epoch=epoch)
        if read_ahead:
            chunks = read_in_background(chunks)
        return batches_from_chunks(chunks, batch_size, start_batch=start_batch, device=device)


def read_in_background(items: Generator[SampleChunk]) -> Iterator[SampleChunk]:
    """Yield what `items` yields, producing the next item in a worker thread meanwhile
    (numpy's copies and pyarrow's parsing run without the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        try:
            upcoming = worker.submit(next, items, None)
            while (item := upcoming.result()) is not None:
                upcoming = worker.submit(next, items, None)
                yield item
        finally:
            if not upcoming.cancel():
                upcoming.exception()  # waits: the worker may still be inside next(items)
            items.close()


class SampleDataset(BatchSource):
    """A converted data set, memory-mapped; iterates batches without loading it whole."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.exists():
            raise ArtifactError(f"{self.directory} is not a converted data set (no manifest.json)")
        self.manifest = read_json(manifest_path)
        if self.manifest.get("format") != FORMAT:
            raise ArtifactError(f"{manifest_path}: unknown format {self.manifest.get('format')!r}")
        self.rows = int(self.manifest["rows"])
        self.user_dim = int(self.manifest["user_dim"])
        self.item_dim = int(self.manifest["item_dim"])
        shapes = {
            "label": (self.rows,),
            "user": (self.rows, self.user_dim),
            "item": (self.rows, self.item_dim),
            "user_id": (self.rows,),
            "item_id": (self.rows,),
        }
        names = self.manifest.get("columns", ["label", "user", "item"])
        self.columns = {name: self._map(name, shapes[name]) for name in names}
        self.labels, self.users, self.items = (self.columns[n] for n in ("label", "user", "item"))

    def _map(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.directory / column_file(name)
        dtype = COLUMN_DTYPES[name]
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not path.exists() or path.stat().st_size != expected:
            raise ArtifactError(f"{path} is missing or not {expected} bytes as the manifest says")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    @property
    def has_ids(self) -> bool:
        return "user_id" in self.columns and "item_id" in self.columns

    def vocabulary(self, side: str) -> list[str]:
        """The ids that the `user_id` / `item_id` column's rows stand for."""
        path = self.directory / f"{side}_vocab.txt"
        if not path.exists():
            raise ArtifactError(f"{self.directory} has no {side} vocabulary ({path.name})")
        return path.read_text().splitlines()

    def __len__(self) -> int:
        return self.rows

    def num_batches(self, batch_size: int) -> int:
        return -(-self.rows // batch_size)

    def chunk(self, start: int, stop: int) -> SampleChunk:
        return SampleChunk(
            **{FIELDS[name]: np.array(column[start:stop]) for name, column in self.columns.items()}
        )

    def iter_chunks(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[SampleChunk]:
        """Yield the rows in file order, or seeded-shuffled by (seed, epoch).

        Rows are copied out of the maps `GATHER_ROWS` at a time, not a window at a time,
        so the first batch of an epoch does not wait for a whole window's copy; the order
        depends only on the windows.
        """
        for rows in self._pieces(shuffle, seed, epoch):
            yield self._gather(rows)

    def _pieces(self, shuffle: bool, seed: int, epoch: int) -> Iterator[slice | np.ndarray]:
        """The rows of each piece to gather: slices in file order, or each shuffled
        window's rows, cut into pieces of `GATHER_ROWS`."""
        if not shuffle:
            for start in range(0, self.rows, GATHER_ROWS):
                yield slice(start, min(start + GATHER_ROWS, self.rows))
            return
        n_blocks = -(-self.rows // BLOCK_ROWS)
        order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        for w, first in enumerate(range(0, n_blocks, WINDOW_BLOCKS)):
            blocks = np.sort(order[first : first + WINDOW_BLOCKS])
            rows = np.concatenate(
                [np.arange(b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, self.rows)) for b in blocks]
            )
            rows = rows[np.random.default_rng([seed, epoch, w]).permutation(len(rows))]
            for start in range(0, len(rows), GATHER_ROWS):
                yield rows[start : start + GATHER_ROWS]

    def _gather(self, rows: slice | np.ndarray) -> SampleChunk:
        """A piece's rows copied out of the memory maps (a fancy index copies)."""
        if isinstance(rows, slice):
            return self.chunk(rows.start, rows.stop)
        return SampleChunk(**{FIELDS[n]: column[rows] for n, column in self.columns.items()})


def batches_from_chunks(
    chunks: Iterator[SampleChunk],
    batch_size: int,
    *,
    start_batch: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[Batch]:
    """Cut a stream of chunks into batches; chunks before `start_batch` are skipped cheaply.

    A batch that straddles two chunks is assembled from the rows it needs; the rest of
    each chunk is cut into views, never copied.
    """
    skip = start_batch * batch_size
    pending: SampleChunk | None = None  # the start of a batch that the next chunk completes
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        start, skip = skip, 0
        if pending is not None:
            stop = start + batch_size - len(pending)
            pending = SampleChunk.concat([pending, chunk.take(slice(start, stop))])
            if len(pending) < batch_size:
                continue
            yield Batch(**_to_tensors(pending, device))
            pending, start = None, stop
        full = start + (len(chunk) - start) // batch_size * batch_size
        tensors = _to_tensors(chunk, device)
        for first in range(start, full, batch_size):
            yield Batch(**{k: v[first : first + batch_size] for k, v in tensors.items()})
        if full < len(chunk):
            pending = chunk.take(slice(full, None))
    if pending is not None and len(pending):
        yield Batch(**_to_tensors(pending, device))


def _to_tensors(chunk: SampleChunk, device: str | torch.device) -> dict[str, torch.Tensor]:
    return {
        FIELDS[name]: torch.from_numpy(np.ascontiguousarray(array)).to(device)
        for name, array in chunk.columns().items()
    }


class TextStream(BatchSource):
    """A text sample file read as a stream (no conversion): chunks in file order,
    rows shuffled within each chunk. Slower per epoch than a converted data set, but
    needs no disk space; the order depends only on (seed, epoch), so runs resume."""

    def __init__(self, path: str | Path, user_dim: int | None = None, *, skip_bad_lines=False):
        self.path = Path(path)
        self.user_dim, self.item_dim = split_dims(count_fields(self.path), user_dim, self.path)
        self.skip_bad_lines = skip_bad_lines
        self.rows: int | None = None  # unknown until read once

    def iter_chunks(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[SampleChunk]:
        chunks = iter_text_chunks(self.path, self.user_dim, skip_bad_lines=self.skip_bad_lines)
        for k, chunk in enumerate(chunks):
            if shuffle:
                chunk = chunk.take(np.random.default_rng([seed, epoch, k]).permutation(len(chunk)))
            yield chunk

    def num_batches(self, batch_size: int) -> int | None:
        return None if self.rows is None else -(-self.rows // batch_size)


Samples = SampleDataset | TextStream


def open_samples(
    path: str | Path,
    user_dim: int | None = None,
    *,
    text_mode: str = "convert",
    skip_bad_lines: bool = False,
) -> Samples:
    """Open training data: a converted data set directory, or a text file.

    A text file is converted once into the cache keyed by its sha256 (`text_mode="convert"`,
    the default: every later epoch and run reads at memory speed), or read as a stream
    (`text_mode="stream"`: no disk space, each epoch parses the text again).
    """
    path = Path(path)
    if path.is_dir():
        return SampleDataset(path)
    if not path.exists():
        raise DataError("file not found", path)
    if text_mode == "convert":
        return cached_conversion(path, user_dim, skip_bad_lines=skip_bad_lines)
    if text_mode == "stream":
        return TextStream(path, user_dim, skip_bad_lines=skip_bad_lines)
    raise ValueError(f"text_mode must be 'convert' or 'stream', got {text_mode!r}")
