"""Installed in the image as the top-level module `finetower`: our custom artifact types by the
names the Kubeflow/Vertex entrypoint looks them up by.

TFX's KubeflowV2DagRunner writes a custom type's TYPE_NAME (`finetower.ItemEmbeddings`) as the
artifact's schema title, and the container entrypoint turns a title back into a class by
importing it as `module.Class`, i.e. `getattr(import_module("finetower"), "ItemEmbeddings")`.
The compiler only accepts titles of the form `name.Class`, so the types cannot be named by their
real dotted paths; this module answers for them instead. Every `finetower.*` artifact type
defined in a `components/*/component.py` is found, so a new component needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

PREFIX = "finetower."


def custom_artifact_types() -> dict[str, type]:
    """Class name after `finetower.` -> the artifact class, from every components/*/component.py."""
    from tfx.types.artifact import Artifact

    import components

    found: dict[str, type] = {}
    for package in pkgutil.iter_modules(components.__path__):
        if not package.ispkg:
            continue
        try:
            module = importlib.import_module(f"components.{package.name}.component")
        except ModuleNotFoundError as error:
            if error.name != f"components.{package.name}.component":
                raise
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Artifact)
                and str(getattr(value, "TYPE_NAME", "")).startswith(PREFIX)
            ):
                found[value.TYPE_NAME[len(PREFIX) :]] = value
    return found


def __getattr__(name: str) -> type:
    types = custom_artifact_types()
    if name in types:
        return types[name]
    raise AttributeError(f"no artifact type {PREFIX}{name} in components/*/component.py")
