"""The ExampleGen's own parameters: the vector sizes every line is checked against."""

from __future__ import annotations

from typing import Any

USER_DIM_KEY = "user_dim"
ITEM_DIM_KEY = "item_dim"


def vector_sizes(exec_properties: dict[str, Any]) -> tuple[int, int]:
    """(user_dim, item_dim) from the component's execution properties."""
    return int(exec_properties[USER_DIM_KEY]), int(exec_properties[ITEM_DIM_KEY])
