"""ExampleGen's `input_base` and split patterns from the user's train/eval inputs.

FileBasedExampleGen matches each split as `os.path.join(input_base, pattern)`, so one base
must lie above every input and each pattern is the input's path below it. An input is a file,
a glob or a folder (a trailing `/`, or a local folder: its files, `*`), local or on an object
store (`gs://`, `s3://`, ...). Inputs in different buckets share only the scheme
(`gs://` + `bucket/...`); local inputs share at least `/`. Local paths are made absolute, so
the base recorded in ML Metadata does not depend on the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

GLOB_CHARS = frozenset("*?[")
# FileBasedExampleGen's driver fills these in (the newest span, or the one RangeConfig names):
# a folder named with one is not fixed, so input_base stays above it
SPAN_PLACEHOLDERS = ("{SPAN}", "{VERSION}", "{YYYY}", "{MM}", "{DD}")


def has_span_placeholder(path: str) -> bool:
    """Whether `path` names spans (FileBasedExampleGen's `{SPAN}` or `{YYYY}{MM}{DD}`)."""
    return any(p in path for p in SPAN_PLACEHOLDERS)


def _is_variable(part: str) -> bool:
    return bool(GLOB_CHARS & set(part)) or has_span_placeholder(part)


TRAIN, EVAL, SINGLE = "train", "eval", "single"


@dataclass(frozen=True)
class SplitInputs:
    """`input_base` and the (split name, pattern) pairs below it, in split order."""

    input_base: str
    patterns: tuple[tuple[str, str], ...]


def _scheme(path: str) -> str:
    """`gs://` for gs://b/x, "" for a local path."""
    return path[: path.index("://") + 3] if "://" in path else ""


def _is_local_dir(path: str) -> bool:
    return "://" not in path and os.path.isdir(path)


def _as_file_pattern(path: str, is_dir: Callable[[str], bool]) -> str:
    """`path` as a pattern of files: a folder becomes the files in it."""
    if "://" not in path:
        trailing = path.endswith("/")
        path = os.path.abspath(path) + ("/" if trailing else "")
    if path.endswith("/") or (not _is_variable(path) and is_dir(path)):
        return path.rstrip("/") + "/*"
    return path


def _fixed_parts(pattern: str) -> list[str]:
    """The folders of `pattern` (after its scheme) above its first glob character."""
    parts = pattern[len(_scheme(pattern)) :].split("/")[:-1]
    fixed = []
    for part in parts:
        if _is_variable(part):
            break
        fixed.append(part)
    return fixed


def split_inputs(
    train: str, eval_: str | None = None, is_dir: Callable[[str], bool] = _is_local_dir
) -> SplitInputs:
    """Base and patterns for `train` and `eval_` (None: one `single` split, to be hash-split).

    `is_dir(path)` says whether a path without a glob or trailing `/` is a folder; the default
    looks only at the local disk (remote folders are named with a trailing `/`, so compiling a
    pipeline for a cluster touches no bucket)."""
    named = [(TRAIN, train), (EVAL, eval_)] if eval_ is not None else [(SINGLE, train)]
    for name, path in named:
        if not path or not path.strip():
            raise ValueError(f"{'eval' if name == EVAL else 'train'} data: an empty path")
    patterns = [(name, _as_file_pattern(path, is_dir)) for name, path in named]
    schemes = {_scheme(p) for _, p in patterns}
    if len(schemes) > 1:
        raise ValueError(
            f"train and eval data must be on the same file system: {train!r} and {eval_!r} "
            "(copy one next to the other)"
        )
    scheme = schemes.pop()
    common = _fixed_parts(patterns[0][1])
    for _, pattern in patterns[1:]:
        other = _fixed_parts(pattern)
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    base = scheme + "/".join(common) if scheme else "/".join(common) or "/"
    if scheme and not common:
        base = scheme  # inputs in different buckets: patterns start with the bucket
    prefix = base if base.endswith("/") else base + "/"
    return SplitInputs(
        input_base=base,
        patterns=tuple((name, pattern[len(prefix) :]) for name, pattern in patterns),
    )


def range_config(span: int | None = None, span_range: str | None = None):
    """RangeConfig for `--span N` or `--span_range A:B` (None: the driver takes the newest span).

    The driver takes one span per run: a range names the span this run ingests (A:B with A == B)
    or, for a backfill, the runner runs once per span of the range (spans_of)."""
    from tfx.proto import range_config_pb2

    spans = spans_of(span, span_range)
    if spans is None:
        return None
    if len(spans) != 1:
        raise ValueError(f"one span per run: run once per span of {span_range!r}")
    return range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(
            start_span_number=spans[0], end_span_number=spans[0]
        )
    )


def spans_of(span: int | None = None, span_range: str | None = None) -> list[int] | None:
    """The spans `--span N` or `--span_range A:B` (inclusive) name; None when neither is given."""
    if span is not None and span_range:
        raise ValueError("give --span or --span_range, not both")
    if span is not None:
        if span < 0:
            raise ValueError(f"--span: a span is a number >= 0, got {span}")
        return [span]
    if not span_range:
        return None
    try:
        start, end = (int(x) for x in span_range.split(":"))
    except ValueError:
        raise ValueError(
            f"--span_range: expected A:B (two span numbers), got {span_range!r}"
        ) from None
    if start < 0 or end < start:
        raise ValueError(f"--span_range: expected 0 <= A <= B, got {span_range!r}")
    return list(range(start, end + 1))


def example_gen_inputs(train: str, eval_: str | None = None, is_dir=_is_local_dir):
    """(input_base, Input, Output) for RecipeCsvExampleGen: named train/eval splits, or one
    input hash-split 80/20 into train and eval. `{SPAN}` / `{YYYY}{MM}{DD}` in a path stay in its
    pattern for the driver (train and eval must then name the same span)."""
    from tfx.proto import example_gen_pb2

    found = split_inputs(train, eval_, is_dir)
    inputs = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=n, pattern=p) for n, p in found.patterns]
    )
    if eval_ is not None:
        return found.input_base, inputs, example_gen_pb2.Output()
    outputs = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name=TRAIN, hash_buckets=4),
                example_gen_pb2.SplitConfig.Split(name=EVAL, hash_buckets=1),
            ]
        )
    )
    return found.input_base, inputs, outputs


def estimated_lines(inputs: list[str | None], probe_bytes: int = 1 << 20) -> int | None:
    """About how many lines the inputs (local files, globs or folders) hold: their bytes over
    the mean line length of the first file's first `probe_bytes`. None when that is not known
    before the run: an input names spans, is on an object store (the DAG may be compiled where
    the bucket cannot be read), matches nothing, or none is given."""
    import tensorflow as tf

    if not inputs or any(i is None or has_span_placeholder(i) or "://" in i for i in inputs):
        return None
    files = []
    for path in inputs:
        pattern = _as_file_pattern(path, lambda p: tf.io.gfile.isdir(p))
        files += [f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f)]
    if not files:
        return None
    with tf.io.gfile.GFile(files[0], "rb") as f:
        head = f.read(probe_bytes)
    newlines = head.count(b"\n")
    if not newlines:
        return None
    total = sum(tf.io.gfile.stat(f).length for f in files)
    return int(total / (len(head) / newlines))
