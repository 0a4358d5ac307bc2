"""ExampleGen's input base and split patterns for files, globs and folders, in the same or
different folders or buckets, local or remote (components/example_gen/inputs.py)."""

from __future__ import annotations

import os
import posixpath

import pytest

from components.example_gen.inputs import example_gen_inputs, split_inputs


def never_a_dir(_: str) -> bool:
    return False


CASES = [
    # (train, eval, input_base, train pattern, eval pattern)
    ("gs://b/data/train/train.csv", "gs://b/data/eval/eval.csv",
     "gs://b/data", "train/train.csv", "eval/eval.csv"),
    ("gs://b/data/train.csv", "gs://b/data/eval.csv",
     "gs://b/data", "train.csv", "eval.csv"),
    ("gs://b/data/train/*.csv", "gs://b/data/eval/*.csv",
     "gs://b/data", "train/*.csv", "eval/*.csv"),
    ("gs://b/data/train/", "gs://b/data/eval/",
     "gs://b/data", "train/*", "eval/*"),
    ("gs://b/data/day=*/train.csv", "gs://b/data/eval.csv",
     "gs://b/data", "day=*/train.csv", "eval.csv"),
    ("gs://b1/train.csv", "gs://b2/x/eval.csv",
     "gs://", "b1/train.csv", "b2/x/eval.csv"),
    ("s3://b/t/part-*", "s3://b/e/part-*",
     "s3://b", "t/part-*", "e/part-*"),
    ("/data/train/train.csv", "/data/eval/eval.csv",
     "/data", "train/train.csv", "eval/eval.csv"),
    ("/data/all/*.csv", "/data/all/eval.csv",
     "/data/all", "*.csv", "eval.csv"),
    ("/srv/a/train.csv", "/mnt/b/eval.csv",
     "/", "srv/a/train.csv", "mnt/b/eval.csv"),
    ("/data/train/", "/data/eval/e.csv",
     "/data", "train/*", "eval/e.csv"),
]  # fmt: skip


@pytest.mark.parametrize(("train", "eval_", "base", "train_pattern", "eval_pattern"), CASES)
def test_named_splits(train, eval_, base, train_pattern, eval_pattern):
    found = split_inputs(train, eval_, is_dir=never_a_dir)
    assert found.input_base == base
    assert found.patterns == (("train", train_pattern), ("eval", eval_pattern))
    # what FileBasedExampleGen globs: the base joined with each pattern is the input again
    for given, (_, pattern) in zip((train, eval_), found.patterns, strict=True):
        expected = given + "*" if given.endswith("/") else given
        assert posixpath.join(base, pattern) == expected


@pytest.mark.parametrize(
    ("train", "base", "pattern"),
    [
        ("gs://b/data/all.csv", "gs://b/data", "all.csv"),
        ("gs://b/data/*.csv", "gs://b/data", "*.csv"),
        ("gs://b/data/", "gs://b/data", "*"),
        ("/data/all.csv", "/data", "all.csv"),
    ],
)
def test_one_input_is_a_single_split(train, base, pattern):
    assert split_inputs(train, None, is_dir=never_a_dir) == split_inputs(train, is_dir=never_a_dir)
    found = split_inputs(train, None, is_dir=never_a_dir)
    assert (found.input_base, found.patterns) == (base, (("single", pattern),))


def test_a_local_folder_means_its_files_and_relative_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "eval.csv").write_text("")
    monkeypatch.chdir(tmp_path)
    found = split_inputs("data/train", "data/eval.csv")  # the default looks at the local disk
    assert found.input_base == str(tmp_path / "data")
    assert found.patterns == (("train", "train/*"), ("eval", "eval.csv"))
    assert os.path.isabs(found.input_base)


def test_a_remote_folder_is_named_with_a_trailing_slash_and_never_looked_up():
    looked_up = []
    found = split_inputs("gs://b/d/train", "gs://b/d/eval/", is_dir=looked_up.append)
    assert found.patterns == (("train", "train"), ("eval", "eval/*"))
    assert looked_up == ["gs://b/d/train"]  # asked only of the path without a trailing '/'


@pytest.mark.parametrize(
    ("train", "eval_", "message"),
    [
        ("gs://b/train.csv", "/local/eval.csv", "same file system"),
        ("", None, "train data: an empty path"),
        ("gs://b/t.csv", "  ", "eval data: an empty path"),
    ],
)
def test_inputs_that_cannot_share_a_base(train, eval_, message):
    with pytest.raises(ValueError, match=message):
        split_inputs(train, eval_, is_dir=never_a_dir)


def test_example_gen_protos_named_or_hash_split():
    base, inputs, outputs = example_gen_inputs("gs://b/d/t.csv", "gs://b/e/v.csv", never_a_dir)
    assert base == "gs://b"
    named = [(s.name, s.pattern) for s in inputs.splits]
    assert named == [("train", "d/t.csv"), ("eval", "e/v.csv")]
    assert not outputs.split_config.splits
    base, inputs, outputs = example_gen_inputs("gs://b/d/*.csv", None, never_a_dir)
    assert (base, inputs.splits[0].pattern) == ("gs://b/d", "*.csv")
    assert [(s.name, s.hash_buckets) for s in outputs.split_config.splits] == [
        ("train", 4),
        ("eval", 1),
    ]
