"""The recipe's text format: one sample a line, `label,u_1..u_U,i_1..i_I`, no header.

Written by pyarrow's CSV writer: floats in their shortest round-trip form (float32), labels
`0` / `1`. `components.example_gen.recipe_csv` reads it back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


def write_text_samples(
    path: str | Path,
    labels: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    *,
    append: bool = False,
) -> None:
    """Write samples `labels [n]`, `users [n, U]`, `items [n, I]` as the recipe's lines."""
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    rows = np.hstack([labels, np.asarray(users, np.float32), np.asarray(items, np.float32)])
    columns = [pa.array(rows[:, j]) for j in range(rows.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(rows.shape[1])])
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "ab" if append else "wb") as f:
        pacsv.write_csv(table, f, options)
