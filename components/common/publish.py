"""One way to make a folder appear complete or not at all, on a local disk or an object store.

    with staged_dir("<serving>/item_tower/7", last="saved_model.pb") as folder:
        ...write files into the local folder `folder`...

Local destination: `folder` is a hidden sibling (`.tmp-<name>-<token>`) renamed into place,
which is atomic on one disk. Object store (gs://, s3://, where a rename is a copy): `folder`
is a local temporary folder, copied to the destination with the file `last` copied last;
readers wait for that file (TF Serving loads a version once `saved_model.pb` exists; our
readers look for `manifest.json`). Either way a failure leaves nothing visible behind: the
staging folder, or what was copied to the object store, is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from components.common.paths import copy_tree, is_remote


def staging_name(final: str | Path) -> str:
    """The hidden sibling a local folder is staged in (TF Serving ignores non-numeric names)."""
    return f".tmp-{Path(final).name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staged_dir(
    final: str | Path, *, replace: bool = False, last: str | None = None
) -> Iterator[Path]:
    """Yield a local folder to fill; when the block succeeds it becomes `final`.

    An existing `final` is an error (FileExistsError) unless `replace`, which swaps the old
    folder out (locally: moved aside, then deleted; on an object store: deleted first).
    """
    final = str(final)
    if not replace and tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} exists: a published folder is never overwritten")
    if is_remote(final):
        with _staged_remote(final, replace=replace, last=last) as folder:
            yield folder
    else:
        with _staged_local(Path(final), replace=replace) as folder:
            yield folder


@contextlib.contextmanager
def _staged_local(final: Path, *, replace: bool) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / staging_name(final)
    staging.mkdir()
    try:
        yield staging
        if replace and final.exists():
            old = final.parent / f".old-{staging.name}"
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, final)  # fails if another writer put `final` there first
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _staged_remote(final: str, *, replace: bool, last: str | None) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix="finetower-publish-"))
    try:
        yield staging
        if replace and tf.io.gfile.exists(final):
            tf.io.gfile.rmtree(final)
        try:
            copy_tree(str(staging), final, last=last)
        except BaseException:
            if tf.io.gfile.exists(final):
                tf.io.gfile.rmtree(final)  # never leave a half-written folder behind
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_tree(src: str, final: str, *, last: str | None = None) -> None:
    """Copy the folder `src` to the new folder `final`, complete or absent."""
    with staged_dir(final, last=last) as folder:
        copy_tree(src, str(folder))


def publish_files(files: dict[str, str], final: str, *, last: str | None = None) -> None:
    """Copy `{name: source path or URI}` into the new folder `final`, complete or absent."""
    with staged_dir(final, last=last) as folder:
        for file_name, source in files.items():
            tf.io.gfile.copy(source, str(folder / file_name), overwrite=True)
