"""Vector files: word2vec format (text or binary, as gensim writes it) or `.npy`.

word2vec files carry ids, so ids flow through every stage that reads and writes them;
a `.npy` array carries none (its ids are the row numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.errors import DataError
from components.common.files import atomic_path

# the default size of user and item vectors (the recipe's 128)
VECTOR_DIM = 128

_TEXT_BYTES = set(b"0123456789+-.eEinfaINFA \t\r\n")


@dataclass
class Vectors:
    """`vectors [n, dim]` float32 with their `ids` (None for a bare `.npy` array)."""

    vectors: np.ndarray
    ids: list[str] | None = None

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.vectors)

    def index(self) -> dict[str, int]:
        """id -> row."""
        if self.ids is None:
            return {str(i): i for i in range(len(self.vectors))}
        return {key: row for row, key in enumerate(self.ids)}


def is_word2vec_binary(path: str | Path) -> bool:
    """Tell gensim's binary format from its text format by the first record's bytes."""
    with open(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise DataError("not a word2vec file: the first line is not 'COUNT DIM'", path, 1)
        dim = int(header[1])
        head = f.read(4096 + 4 * dim)
    space = head.find(b" ")
    sample = head[space + 1 : space + 1 + 4 * dim] if space >= 0 else head
    return not set(sample) <= _TEXT_BYTES


def read_vectors(path: str | Path) -> Vectors:
    """Read a word2vec (text/binary) or `.npy` vector file; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise DataError(f"expected a 2-d array [n, dim], got shape {array.shape}", path)
        vectors = Vectors(np.ascontiguousarray(array, dtype=np.float32))
    else:
        from gensim.models import KeyedVectors  # heavy import, only for word2vec files

        binary = is_word2vec_binary(path)
        try:
            keyed = KeyedVectors.load_word2vec_format(str(path), binary=binary)
        except (ValueError, EOFError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read word2vec file: {error}", path) from None
        vectors = Vectors(np.ascontiguousarray(keyed.vectors, np.float32), list(keyed.index_to_key))
    if len(vectors) and not np.isfinite(vectors.vectors).all():
        row = int(np.argmax(~np.isfinite(vectors.vectors).all(axis=1)))
        name = vectors.ids[row] if vectors.ids else str(row)
        raise DataError(f"vector of {name!r} (row {row + 1}) holds NaN or infinity", path)
    return vectors


def write_vectors(path: str | Path, vectors: Vectors, *, binary: bool | None = None) -> None:
    """Write vectors atomically: `.npy` by suffix, else word2vec (binary if `.bin`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(vectors.vectors, dtype=np.float32))
            return
        from gensim.models import KeyedVectors

        ids = vectors.ids if vectors.ids is not None else [str(i) for i in range(len(vectors))]
        keyed = KeyedVectors(vectors.dim, dtype=np.float32)
        keyed.add_vectors(ids, vectors.vectors)
        keyed.save_word2vec_format(
            str(tmp), binary=path.suffix == ".bin" if binary is None else binary
        )
