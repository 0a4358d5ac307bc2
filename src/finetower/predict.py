"""Using a trained model: click probabilities for samples, tower outputs for vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from finetower.artifacts import atomic_path
from finetower.errors import DataError
from finetower.export import folded_queries, item_embeddings, user_embeddings
from finetower.model import TwoTowerModel
from finetower.textformat import iter_text_chunks
from finetower.vectors import Vectors, is_word2vec_binary, read_vectors, write_vectors

SIDES = ("user", "item")


@torch.no_grad()
def predict_file(
    model: TwoTowerModel, input_path: str | Path, out_path: str | Path, *, batch_size=65536
) -> int:
    """Write one probability per input line (text format; label ignored), in input order.

    Returns the number of lines scored.
    """
    model.eval()
    c = model.config
    if c.has_ids:
        raise DataError("this model has ID embeddings: the text format carries no ids")
    rows = 0
    chunks = iter_text_chunks(
        input_path, c.user_dim, binary_labels=False, expect_fields=1 + c.user_dim + c.item_dim
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with atomic_path(out_path) as tmp, open(tmp, "wb") as out:
        for chunk in chunks:
            users, items = torch.from_numpy(chunk.users), torch.from_numpy(chunk.items)
            for start in range(0, len(chunk), batch_size):
                stop = start + batch_size
                proba = model.predict_proba(users[start:stop], items[start:stop]).numpy()
                pacsv.write_csv(pa.table({"p": proba}), out, options)
            rows += len(chunk)
    return rows


def tower_outputs(
    model: TwoTowerModel,
    side: str,
    vectors: np.ndarray,
    *,
    for_retrieval: bool = False,
    source: str | Path | None = None,
) -> np.ndarray:
    """One tower's outputs [n, embedding_dim] for vectors [n, dim], in bounded batches.

    `for_retrieval` on the user side folds the output layer's weights into the query
    (`w ⊙ user_tower(u)`), so `query · item_embedding + bias` is the model's logit.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'user' or 'item', got {side!r}")
    if side == "item":
        return item_embeddings(model, vectors, source=source)
    if for_retrieval:
        return folded_queries(model, vectors, source=source)
    return user_embeddings(model, vectors, source=source)


def embed_file(
    model: TwoTowerModel,
    side: str,
    input_path: str | Path,
    out_path: str | Path,
    *,
    for_retrieval: bool = False,
) -> int:
    """Write the tower output of every vector in a file, in the input's format
    (word2vec in -> word2vec out with the same ids, `.npy` in -> `.npy` out)."""
    input_path, out_path = Path(input_path), Path(out_path)
    vectors = read_vectors(input_path)
    embeddings = tower_outputs(
        model, side, vectors.vectors, for_retrieval=for_retrieval, source=input_path
    )
    if input_path.suffix == ".npy" and out_path.suffix != ".npy":
        raise DataError("a .npy input gives a .npy output; name OUT with .npy", out_path)
    if input_path.suffix != ".npy" and out_path.suffix == ".npy":
        raise DataError("a word2vec input gives a word2vec output (ids carry through)", out_path)
    binary = None if input_path.suffix == ".npy" else is_word2vec_binary(input_path)
    write_vectors(out_path, Vectors(embeddings, vectors.ids), binary=binary)
    return len(embeddings)
