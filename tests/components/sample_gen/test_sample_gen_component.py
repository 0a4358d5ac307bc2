"""SampleGen component on a small real two-domain log: Examples in the recipe's schema,
negatives, counts, the time split, user vectors from strictly earlier items only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx.types import artifact_utils, channel_utils, standard_artifacts

from components.common.errors import DataError
from components.common.vectors import read_vectors
from components.example_gen.schema import recipe_schema
from components.item2vec.component import Executor as Item2VecExecutor
from components.item2vec.component import Item2VecVectors
from components.sample_gen.component import (
    HELD_OUT_FILES,
    Executor,
    HeldOutInteractions,
    ItemCatalogue,
    SampleGen,
)
from components.sample_gen.synthetic import synthetic_world

DIM = 8
SAMPLE_PARAMS = dict(negatives=4, negative_sampling="uniform", last_n=5, seed=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Source and target logs of a small synthetic world, and item2vec vectors of the source."""
    root = tmp_path_factory.mktemp("world")
    world = synthetic_world(n_users=150, n_items=100, source_per_user=20, target_per_user=6, seed=5)
    pq.write_table(world.source, root / "source.parquet")
    pq.write_table(world.target, root / "target.parquet")
    vectors = Item2VecVectors()
    vectors.uri = str(root / "vectors")
    Item2VecExecutor().Do(
        {},
        {"item_vectors": [vectors]},
        dict(
            log=str(root / "source.parquet"),
            dim=DIM,
            window=5,
            min_count=1,
            epochs=1,
            negative=5,
            seed=0,
            reproducible=True,
            workers=1,
        ),
    )
    return {"root": root, "vectors": vectors, "world": world}


def generate(world, tmp_path, target=None, **overrides):
    out = {
        "examples": standard_artifacts.Examples(),
        "catalogue": ItemCatalogue(),
        "held_out": HeldOutInteractions(),
    }
    for name, artifact in out.items():
        artifact.uri = str(tmp_path / name)
    params = {
        **SAMPLE_PARAMS,
        "target_log": str(target or world["root"] / "target.parquet"),
        "history_log": str(world["root"] / "source.parquet"),
        **overrides,
    }
    Executor().Do({"item_vectors": [world["vectors"]]}, {k: [v] for k, v in out.items()}, params)
    return out


def read_split(examples, split: str) -> dict[str, np.ndarray]:
    """Parse a split with the feature spec of the recipe's schema (what Transform reads)."""
    spec = schema_utils.schema_as_feature_spec(recipe_schema(DIM, DIM)).feature_spec
    pattern = artifact_utils.get_split_uri([examples], split) + "/*"
    records = list(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)).as_numpy_iterator())
    parsed = tf.io.parse_example(records, spec)
    return {
        k: (v.values if isinstance(v, tf.SparseTensor) else v).numpy() for k, v in parsed.items()
    }


@pytest.fixture(scope="module")
def generated(world, tmp_path_factory):
    out = generate(world, tmp_path_factory.mktemp("samples"))
    return {
        **out,
        "train": read_split(out["examples"], "train"),
        "eval": read_split(out["examples"], "eval"),
    }


def test_examples_carry_exactly_the_recipes_features(generated):
    examples = generated["examples"]
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    pattern = artifact_utils.get_split_uri([examples], "train") + "/*"
    record = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern))))
    features = tf.train.Example.FromString(record.numpy()).features.feature
    assert set(features) == {f.name for f in recipe_schema(DIM, DIM).feature}
    train = generated["train"]
    assert train["user_vector"].shape == (len(train["label"]), DIM)
    assert train["item_vector"].shape == (len(train["label"]), DIM)
    assert set(np.unique(train["label"]).tolist()) == {0, 1}
    assert examples.get_int_custom_property("train_rows") == len(train["label"])


def test_four_negatives_per_positive_none_of_them_the_users_own(world, generated):
    target = world["world"].target
    own = set(zip(target["user"].to_pylist(), target["item"].to_pylist(), strict=True))
    for split in ("train", "eval"):
        rows = generated[split]
        labels = rows["label"].ravel()
        positives = int(labels.sum())
        assert len(labels) - positives == 4 * positives > 0
        pairs = zip(rows["user_id"].tolist(), rows["item_id"].tolist(), strict=True)
        negatives = [
            (u.decode(), i.decode()) for (u, i), y in zip(pairs, labels, strict=True) if y == 0
        ]
        assert not own.intersection(negatives)
        positive_pairs = [
            (u.decode(), i.decode())
            for u, i, y in zip(rows["user_id"], rows["item_id"], labels, strict=True)
            if y == 1
        ]
        assert own.issuperset(positive_pairs)


def test_the_split_is_by_time_and_holds_out_each_users_last_event(world, generated):
    folder = generated["held_out"].uri
    splits = {
        s: pq.read_table(f"{folder}/{s}_interactions.parquet").to_pandas()
        for s in ("train", "val", "test")
    }
    assert sum(len(t) for t in splits.values()) == world["world"].target.num_rows
    assert splits["val"].user.is_unique and splits["test"].user.is_unique
    last_train = splits["train"].groupby("user").timestamp.max().to_dict()
    val = dict(zip(splits["val"].user, splits["val"].timestamp, strict=True))
    test = dict(zip(splits["test"].user, splits["test"].timestamp, strict=True))
    assert set(val) <= set(test) and set(test) <= set(last_train)  # a user keeps a train event
    for user, time in test.items():
        assert last_train[user] <= val.get(user, time) <= time
    # the eval split's positives are exactly the validation events
    assert int(generated["eval"]["label"].sum()) == len(splits["val"])


def _expected_user_vector(history: list[tuple[int, str]], before: int, vectors, last_n: int):
    """Mean of the vectors of the last `last_n` items strictly before `before`."""
    index = vectors.index()
    earlier = [item for time, item in sorted(history) if time < before and item in index]
    rows = [index[item] for item in earlier[-last_n:]]
    return vectors.vectors[rows].mean(axis=0) if rows else None


@pytest.mark.parametrize("last_n", [5, 1])
def test_user_vectors_use_only_strictly_earlier_items(world, tmp_path, last_n):
    out = generate(world, tmp_path, last_n=last_n)
    rows = read_split(out["examples"], "eval")
    vectors = read_vectors(f"{world['vectors'].uri}/item_vectors.bin")
    folder = out["held_out"].uri
    train = pq.read_table(f"{folder}/train_interactions.parquet").to_pylist()
    val = {r["user"]: r for r in pq.read_table(f"{folder}/val_interactions.parquet").to_pylist()}
    history: dict[str, list] = {}
    for event in world["world"].source.to_pylist() + train:
        history.setdefault(event["user"], []).append((event["timestamp"], event["item"]))
    checked = changed_by_the_event = 0
    for user, vector, label in zip(
        rows["user_id"], rows["user_vector"], rows["label"].ravel(), strict=True
    ):
        if label != 1:
            continue
        event = val[user.decode()]
        expected = _expected_user_vector(
            history[event["user"]], event["timestamp"], vectors, last_n
        )
        np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)
        with_event = history[event["user"]] + [(event["timestamp"], event["item"])]
        leaky = _expected_user_vector(with_event, event["timestamp"] + 1, vectors, last_n)
        changed_by_the_event += not np.allclose(vector, leaky, atol=1e-6)
        checked += 1
    assert checked == len(val) > 50
    # the sample's own event would have shown (unless it repeats the item leaving the window)
    assert changed_by_the_event >= 0.9 * checked


def test_catalogue_holds_every_item_with_a_vector_and_target_counts(world, generated):
    uri = generated["catalogue"].uri
    catalogue = read_vectors(f"{uri}/catalogue.txt")
    vectors = read_vectors(f"{world['vectors'].uri}/item_vectors.bin")
    assert catalogue.ids == vectors.ids
    counts = pq.read_table(f"{uri}/catalogue.parquet")
    train = pq.read_table(f"{generated['held_out'].uri}/train_interactions.parquet")
    assert int(pa.compute.sum(counts["train_count"]).as_py()) == train.num_rows
    assert generated["catalogue"].get_int_custom_property("count") == len(catalogue)


def test_same_seed_same_examples_another_seed_other_negatives(world, generated, tmp_path):
    again = read_split(generate(world, tmp_path / "a")["examples"], "train")
    np.testing.assert_array_equal(again["item_id"], generated["train"]["item_id"])
    other = read_split(generate(world, tmp_path / "b", seed=1)["examples"], "train")
    assert not np.array_equal(other["item_id"], generated["train"]["item_id"])


def test_a_bad_target_log_is_named_with_its_line(world, tmp_path):
    table = world["world"].target.slice(0, 40)
    items = table["item"].to_pylist()
    items[3] = None
    pacsv.write_csv(table.set_column(1, "item", pa.array(items, pa.string())), tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t.csv, line 5: empty value in column 'item'"):
        generate(world, tmp_path, target=tmp_path / "t.csv")


def test_component_spec_takes_the_window_and_checks_options(world):
    vectors = channel_utils.as_channel([world["vectors"]])
    component = SampleGen(vectors, str(world["root"] / "target.parquet"), last_n=3)
    assert component.exec_properties["last_n"] == 3
    assert component.exec_properties["negatives"] == 4
    assert set(component.outputs) == {"examples", "catalogue", "held_out"}
    with pytest.raises(ValueError, match="negative_sampling"):
        SampleGen(vectors, str(world["root"] / "target.parquet"), negative_sampling="hard")


def test_item2vec_and_samples_run_with_logs_and_artifacts_on_a_uri(world, tmp_path):
    """gs:// stands in as TensorFlow's ram://: logs, vectors and outputs all on URIs."""
    bucket = f"ram://samples-{tmp_path.name}"
    for name in ("source.parquet", "target.parquet"):
        tf.io.gfile.makedirs(bucket)
        tf.io.gfile.copy(str(world["root"] / name), f"{bucket}/{name}")
    vectors = Item2VecVectors()
    vectors.uri = f"{bucket}/vectors"
    params = dict(dim=DIM, window=5, min_count=1, epochs=1, negative=5, seed=0)
    Item2VecExecutor().Do(
        {},
        {"item_vectors": [vectors]},
        dict(log=f"{bucket}/source.parquet", reproducible=True, workers=1, **params),
    )
    assert vectors.get_int_custom_property("count") > 50
    local = generate(world, tmp_path / "local")
    remote = {
        "examples": standard_artifacts.Examples(),
        "catalogue": ItemCatalogue(),
        "held_out": HeldOutInteractions(),
    }
    for name, artifact in remote.items():
        artifact.uri = f"{bucket}/{name}"
    Executor().Do(
        {"item_vectors": [vectors]},
        {k: [v] for k, v in remote.items()},
        {
            **SAMPLE_PARAMS,
            "target_log": f"{bucket}/target.parquet",
            "history_log": f"{bucket}/source.parquet",
        },
    )
    # the same inputs on a URI give the same samples as on the local disk
    for split in ("train", "eval"):
        got, expected = read_split(remote["examples"], split), read_split(local["examples"], split)
        np.testing.assert_array_equal(got["label"], expected["label"])
        np.testing.assert_array_equal(got["user_vector"], expected["user_vector"])
    for name in HELD_OUT_FILES:
        assert tf.io.gfile.exists(f"{bucket}/held_out/{name}")
    count = remote["catalogue"].get_int_custom_property("count")
    assert count == local["catalogue"].get_int_custom_property("count") > 0
