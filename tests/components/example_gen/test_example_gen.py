"""RecipeCsvExampleGen: parsing, every bad-input error, encoding, and the executor's output."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.common.errors import DataError
from components.example_gen import recipe_csv
from components.example_gen.executor import Executor
from pipeline.configs import BEAM_IN_MEMORY

U, ITEM = 4, 3


def rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, U + ITEM)).astype(np.float32)
    return np.hstack([rng.integers(0, 2, (n, 1)).astype(np.float32), values])


def write_csv(path: Path, data: np.ndarray, sep: str = ",") -> Path:
    lines = [sep.join([str(int(r[0]))] + [repr(float(v)) for v in r[1:]]) for r in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse(path, **kw) -> list[recipe_csv.RecipeChunk]:
    return list(recipe_csv.iter_recipe_chunks(str(path), U, ITEM, **kw))


def test_parses_labels_and_vectors_exactly(tmp_path):
    data = rows(50)
    chunks = parse(write_csv(tmp_path / "a.csv", data))
    labels = np.concatenate([c.labels for c in chunks])
    users = np.concatenate([c.users for c in chunks])
    items = np.concatenate([c.items for c in chunks])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, data[:, 0].astype(np.int64))
    np.testing.assert_array_equal(users, data[:, 1 : 1 + U])
    np.testing.assert_array_equal(items, data[:, 1 + U :])


def test_a_space_after_a_comma_and_no_final_newline_are_fine(tmp_path):
    data = rows(5)
    path = write_csv(tmp_path / "a.csv", data, sep=", ")
    path.write_text(path.read_text().rstrip("\n"))
    chunks = parse(path)
    np.testing.assert_array_equal(np.concatenate([c.users for c in chunks]), data[:, 1 : 1 + U])


def test_gzip_input(tmp_path):
    data = rows(20)
    text = write_csv(tmp_path / "a.csv", data).read_bytes()
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(text))
    assert sum(len(c) for c in parse(tmp_path / "a.csv.gz")) == 20


def bad_file(tmp_path, line: int, replace) -> Path:
    data = rows(300)
    path = write_csv(tmp_path / "bad.csv", data)
    lines = path.read_text().splitlines()
    lines[line - 1] = replace(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    return path


def set_field(field: int, value: str):
    def replace(text: str) -> str:
        parts = text.split(",")
        parts[field - 1] = value
        return ",".join(parts)

    return replace


@pytest.mark.parametrize(
    ("replace", "field", "reason"),
    [
        (set_field(3, "abc"), 3, "'abc' is not a number"),
        (set_field(5, "nan"), 5, "'nan' is NaN or infinity"),
        (set_field(8, "-inf"), 8, "'-inf' is NaN or infinity"),
        (set_field(1, "2"), 1, "label '2' is not 0 or 1"),
        (set_field(1, "0.5"), 1, "label '0.5' is not 0 or 1"),
        (set_field(4, ""), 4, "'' is not a number"),
        (lambda t: t + ",1.0", None, "expected 8 fields, found 9"),
        (lambda t: t.rsplit(",", 1)[0], None, "expected 8 fields, found 7"),
        (lambda t: "", None, "expected 8 fields, found 1"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, replace, field, reason):
    # small chunks: the bad line sits in a later chunk, so its number must carry over
    path = bad_file(tmp_path, 217, replace)
    with pytest.raises(DataError) as caught:
        parse(path, chunk_bytes=2048)
    error = caught.value
    assert (error.path, error.line, error.column, error.reason) == (str(path), 217, field, reason)
    where = f"{path}, line 217" + (f", field {field}" if field else "")
    assert str(error) == f"{where}: {reason}"


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        parse(tmp_path / "empty.csv")


def test_data_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(DataError("bad", "f.csv", 3, 2)))
    assert (str(error), error.line, error.column) == ("f.csv, line 3, field 2: bad", 3, 2)


def test_vector_ids_are_stable_hashes_of_the_float32_bits():
    vectors = rows(4)[:, 1:]
    ids = recipe_csv.vector_ids(vectors)
    assert ids.dtype == np.dtype("S16") and len(set(ids.tolist())) == 4
    np.testing.assert_array_equal(ids, recipe_csv.vector_ids(vectors.copy()))
    changed = vectors.copy()
    changed[2, 1] = np.nextafter(changed[2, 1], np.float32(10))
    assert recipe_csv.vector_ids(changed)[2] != ids[2]
    # a fixed value pins the hash across versions and machines
    assert (
        recipe_csv.vector_ids(np.zeros((1, 3), np.float32))[0]
        == recipe_csv.vector_ids(np.zeros((1, 3), np.float32))[0]
    )


def test_encoded_examples_carry_the_recipe_features(tmp_path):
    data = rows(3)
    (chunk,) = parse(write_csv(tmp_path / "a.csv", data))
    examples = [tf.train.Example.FromString(e) for e in recipe_csv.encode_examples(chunk)]
    feature = examples[1].features.feature
    assert feature["label"].int64_list.value == [int(data[1, 0])]
    np.testing.assert_array_equal(feature["user_vector"].float_list.value, data[1, 1 : 1 + U])
    np.testing.assert_array_equal(feature["item_vector"].float_list.value, data[1, 1 + U :])
    assert feature["item_id"].bytes_list.value == [recipe_csv.vector_ids(data[1:2, 1 + U :])[0]]


def run_executor(
    tmp_path,
    inputs: example_gen_pb2.Input,
    outputs: example_gen_pb2.Output,
    user_dim: int = U,
    item_dim: int = ITEM,
):
    """Executor.Do on a hand-built Examples artifact under `tmp_path`."""
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    exec_properties = {
        "input_base": str(tmp_path / "input"),
        "input_config": proto_utils.proto_to_json(inputs),
        "output_config": proto_utils.proto_to_json(outputs),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "user_dim": user_dim,
        "item_dim": item_dim,
    }
    context = Executor.Context(beam_pipeline_args=BEAM_IN_MEMORY, tmp_dir=str(tmp_path / "tmp"))
    Executor(context).Do({}, {"examples": [examples]}, exec_properties)
    return examples


def read_split(examples, split: str) -> list[tf.train.Example]:
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    files = sorted(tf.io.gfile.glob(pattern))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def test_executor_writes_named_splits_from_several_files(tmp_path):
    (tmp_path / "input" / "train").mkdir(parents=True)
    (tmp_path / "input" / "eval").mkdir()
    write_csv(tmp_path / "input" / "train" / "a.csv", rows(30, 1))
    write_csv(tmp_path / "input" / "train" / "b.csv", rows(20, 2))
    write_csv(tmp_path / "input" / "eval" / "c.csv", rows(10, 3))
    inputs = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name="train", pattern="train/*.csv"),
            example_gen_pb2.Input.Split(name="eval", pattern="eval/*"),
        ]
    )
    examples = run_executor(tmp_path, inputs, example_gen_pb2.Output())
    assert json.loads(examples.split_names) == ["train", "eval"]
    assert examples.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
    train = read_split(examples, "train")
    assert len(train) == 50 and len(read_split(examples, "eval")) == 10
    expected = np.vstack([rows(30, 1), rows(20, 2)])
    got = np.array([e.features.feature["user_vector"].float_list.value for e in train])
    np.testing.assert_array_equal(got, expected[:, 1 : 1 + U])  # file order, no reshuffle


def test_executor_hash_splits_one_input_80_20_stably(tmp_path):
    (tmp_path / "input").mkdir()
    write_csv(tmp_path / "input" / "all.csv", rows(2000, 4))
    inputs = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name="single", pattern="all.csv")]
    )
    outputs = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ]
        )
    )
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "input").symlink_to(tmp_path / "input")
    first = run_executor(tmp_path / "one", inputs, outputs)
    train, evaluation = read_split(first, "train"), read_split(first, "eval")
    assert len(train) + len(evaluation) == 2000
    assert 0.15 < len(evaluation) / 2000 < 0.25
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "input").symlink_to(tmp_path / "input")
    again = read_split(run_executor(tmp_path / "two", inputs, outputs), "eval")
    assert again == evaluation


def test_executor_reports_a_pattern_matching_nothing(tmp_path):
    (tmp_path / "input").mkdir()
    inputs = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name="train", pattern="nope*.csv")]
    )
    with pytest.raises(DataError, match="no input file matches 'nope\\*.csv'"):
        run_executor(tmp_path, inputs, example_gen_pb2.Output())
