"""Fine-tuning samples: user vectors from strictly earlier events, negatives, splits, the
recipe's text files and their ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components.common.errors import DataError
from components.common.interactions import check_interactions
from components.common.user_vectors import user_vector
from components.common.vectors import Vectors, read_vectors
from components.item2vec.pretrain import PretrainConfig, pretrain
from components.sample_gen.movielens import load_movielens
from components.sample_gen.recipe_text import write_text_samples
from components.sample_gen.samples import (
    SampleConfig,
    build_samples,
    query_user_vectors,
    sample_negatives,
)
from components.sample_gen.split import transfer_split
from components.sample_gen.synthetic import synthetic_world

DIM = 8  # the world's pretrained vectors


@dataclass
class Samples:
    labels: np.ndarray
    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_samples(path, user_dim: int = DIM) -> Samples:
    """A recipe text file (`label,u_1..u_U,i_1..i_I`, no header) as float32 arrays."""
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    rows = np.column_stack([column.to_numpy() for column in table.columns]).astype(np.float32)
    return Samples(rows[:, 0], rows[:, 1 : 1 + user_dim], rows[:, 1 + user_dim :])


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    """A small world with coarse clocks (many equal timestamps), logs and vectors on disk."""
    root = tmp_path_factory.mktemp("world")
    world = synthetic_world(n_users=150, n_items=80, seed=5)
    for name in ("source", "target"):
        log = getattr(world, name)
        coarse = pc.divide(log["timestamp"], 50_000_000)
        pq.write_table(log.set_column(2, "timestamp", coarse), root / f"{name}.parquet")
    pretrain(root / "source.parquet", root / "vectors", PretrainConfig(dim=8, min_count=3))
    return root


def build(world_dir, out, **config):
    return build_samples(
        world_dir / "target.parquet", world_dir / "vectors", out, config=SampleConfig(**config)
    )


def expected_user_vector(histories: list[tuple[int, str]], time: int, vectors: Vectors):
    """user_vector over the events strictly before `time`, oldest first (stable on ties)."""
    earlier = sorted((t, position, item) for position, (t, item) in enumerate(histories))
    return user_vector(vectors, [item for t, _, item in earlier if t < time])[0]


@pytest.mark.parametrize("split", ["time", "random"])
def test_every_user_vector_comes_from_strictly_earlier_events(world_dir, tmp_path, split):
    build(world_dir, tmp_path / "s", split=split)
    vectors = read_vectors(world_dir / "vectors/item_vectors.bin")
    source = pq.read_table(world_dir / "source.parquet")
    train = pq.read_table(tmp_path / "s/train_interactions.parquet")
    histories: dict[str, list[tuple[int, str]]] = {}
    for log in (source, train):  # source first: on equal times it comes first
        for user, item, t in zip(
            *(log[c].to_pylist() for c in ("user", "item", "timestamp")), strict=True
        ):
            histories.setdefault(user, []).append((t, item))
    index = vectors.index()
    checked = 0
    for name in ("train", "val", "test"):
        events = pq.read_table(tmp_path / f"s/{name}_interactions.parquet")
        # the user vectors each event may have, by its item's row
        allowed: dict[int, list[np.ndarray]] = {}
        for user, item, t in zip(
            *(events[c].to_pylist() for c in ("user", "item", "timestamp")), strict=True
        ):
            expected = expected_user_vector(histories.get(user, []), t, vectors)
            if expected is not None:
                allowed.setdefault(index[item], []).append(expected)
        data = read_samples(tmp_path / f"s/{name}.txt")
        item_rows = {vector.tobytes(): row for row, vector in enumerate(vectors.vectors)}
        for label, user_vec, item_vec in zip(data.labels, data.users, data.items, strict=True):
            if label == 1:
                options = allowed[item_rows[item_vec.tobytes()]]
                assert any(np.allclose(user_vec, o, rtol=1e-5, atol=1e-6) for o in options)
                checked += 1
    assert checked > 300


def test_negatives_never_hit_a_users_positive():
    rng = np.random.default_rng(0)
    catalogue = np.arange(10)
    # user 0 owns items 0-8 (one negative possible), user 1 owns all (none possible)
    positives = np.array([0 * 100 + i for i in range(9)] + [100 + i for i in range(10)])
    users = np.array([0, 0, 1, 2])
    drawn = sample_negatives(rng, users, 50, catalogue, None, positives, stride=100)
    assert (drawn[:2] == 9).all()
    assert (drawn[2] == -1).all()
    assert set(drawn[3]) <= set(catalogue)


def test_popularity_negatives_follow_train_counts():
    rng = np.random.default_rng(1)
    counts = np.array([0.0, 1.0, 16.0])
    drawn = sample_negatives(
        rng, np.zeros(20_000, np.int64), 1, np.arange(3), counts**0.75, np.array([99]), stride=10
    )
    share = np.bincount(drawn.ravel(), minlength=3) / drawn.size
    # weights 0 : 1 : 16^0.75 = 8, so shares 0, 1/9, 8/9
    assert share[0] == 0
    assert share[2] == pytest.approx(8 / 9, abs=0.01)


def test_each_positive_has_its_negatives_and_none_is_the_users(world_dir, tmp_path):
    manifest = build(world_dir, tmp_path / "s", negatives=3)
    for counts in manifest["splits"].values():
        assert counts["negatives"] == 3 * counts["positives"]
        assert counts["rows"] == 4 * counts["positives"]
    # a negative's item is never among the target items of a user with the same vector
    data = read_samples(tmp_path / "s/train.txt")
    own = {}
    for label, user_vec, item_vec in zip(data.labels, data.users, data.items, strict=True):
        if label == 1:
            own.setdefault(user_vec.tobytes(), set()).add(item_vec.tobytes())
    negatives = [
        (u.tobytes(), i.tobytes())
        for lb, u, i in zip(data.labels, data.users, data.items, strict=True)
        if lb == 0
    ]
    assert not any(item in own.get(user, ()) for user, item in negatives)


def test_time_split_holds_out_each_users_last_events(world_dir, tmp_path):
    manifest = build(world_dir, tmp_path / "s")
    events = {}
    for name in ("train", "val", "test"):
        table = pq.read_table(tmp_path / f"s/{name}_interactions.parquet")
        events[name] = list(
            zip(*(table[c].to_pylist() for c in ("user", "timestamp")), strict=True)
        )
    last_train = {}
    for user, t in events["train"]:
        last_train[user] = max(t, last_train.get(user, t))
    for name in ("val", "test"):
        users = [user for user, _ in events[name]]
        assert len(users) == len(set(users))  # one held-out event per user and split
        assert all(t >= last_train[user] for user, t in events[name])
    assert manifest["coverage"]["users_holding_out_fewer"] > 0  # users with 1-2 events


def test_same_seed_same_bytes_and_another_seed_differs(world_dir, tmp_path):
    build(world_dir, tmp_path / "a", seed=1)
    build(world_dir, tmp_path / "b", seed=1)
    build(world_dir, tmp_path / "c", seed=2)
    for name in ("train.txt", "test.txt", "train_ids.parquet", "histories.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/train.txt").read_bytes() != (tmp_path / "c/train.txt").read_bytes()


def test_text_rows_and_their_ids_agree_row_by_row(world_dir, tmp_path):
    manifest = build(world_dir, tmp_path / "s")
    vectors = read_vectors(world_dir / "vectors/item_vectors.bin")
    histories = pq.read_table(tmp_path / "s/histories.parquet")
    for name in ("train", "val"):
        data = read_samples(tmp_path / f"s/{name}.txt")
        ids = pq.read_table(tmp_path / f"s/{name}_ids.parquet")
        assert ids.column_names == ["label", "user", "item", "timestamp"]
        assert len(data) == ids.num_rows == manifest["splits"][name]["rows"]
        np.testing.assert_array_equal(data.labels, ids["label"].to_numpy())
        rows = [vectors.index()[item] for item in ids["item"].to_pylist()]
        np.testing.assert_array_equal(data.items, vectors.vectors[rows])
        # the user vector is the user's at the row's time, from histories.parquet
        users, has = query_user_vectors(
            histories, vectors, ids["user"], ids["timestamp"].to_numpy()
        )
        assert has.all()
        np.testing.assert_allclose(data.users, users, rtol=1e-6, atol=1e-7)
        assert 0 < data.labels.mean() < 1  # shuffled positives and negatives, not by label
        assert data.labels[: len(data) // 5].mean() < 1


def test_write_text_samples_writes_the_recipes_lines(tmp_path):
    path = tmp_path / "s.txt"
    users = np.array([[0.5, -1.25], [1e-8, 3.0]], np.float32)
    write_text_samples(path, np.array([1, 0]), users, np.array([[2.0], [0.1]], np.float32))
    write_text_samples(path, [1], users[:1], np.array([[7.0]], np.float32), append=True)
    assert path.read_text() == "1,0.5,-1.25,2\n0,1e-8,3,0.1\n1,0.5,-1.25,7\n"


def test_query_vectors_from_histories_match_the_test_samples(world_dir, tmp_path):
    build(world_dir, tmp_path / "s")
    vectors = read_vectors(world_dir / "vectors/item_vectors.bin")
    test = pq.read_table(tmp_path / "s/test_interactions.parquet")
    histories = pq.read_table(tmp_path / "s/histories.parquet")
    users, times = test["user"], test["timestamp"].to_numpy()
    got, has = query_user_vectors(histories, vectors, users, times)
    data = read_samples(tmp_path / "s/test.txt")
    positive_users = {u.tobytes() for u in data.users[data.labels == 1]}
    assert has.all() and {v.tobytes() for v in got} == positive_users


def test_missing_items_and_users_are_counted_with_their_fallback(world_dir, tmp_path):
    target = pq.read_table(world_dir / "target.parquet")
    extra = pa.table(
        {
            "user": ["stranger", "stranger", "u1"],
            "item": ["i0", "i1", "never-seen"],
            "timestamp": [10**9 - 2, 10**9 - 1, 10**9],
        }
    )
    log = pa.concat_tables([target, extra.cast(target.schema)])
    dropped = build_samples(log, world_dir / "vectors", tmp_path / "d")
    coverage = dropped["coverage"]
    assert coverage["target_events_item_without_vector"] == 1
    assert coverage["target_items_without_vector"] == 1
    # the stranger has no source history: its first event has no user vector at all
    assert dropped["splits"]["train"]["positives_without_user_history"] >= 1
    kept = build_samples(
        log, world_dir / "vectors", tmp_path / "m", config=SampleConfig(missing_user="mean")
    )
    for name in ("train", "val", "test"):
        lost = dropped["splits"][name]["positives_without_user_history"]
        assert kept["splits"][name]["positives"] == dropped["splits"][name]["positives"] + lost


def test_an_empty_target_domain_is_an_error(world_dir, tmp_path):
    log = pa.table({"user": ["u1"], "item": ["no-such-item"], "timestamp": [1]})
    with pytest.raises(DataError, match="target domain is empty"):
        build_samples(log, world_dir / "vectors", tmp_path / "s")


def test_vector_files_of_mixed_sizes_are_an_error(world_dir, tmp_path):
    import shutil

    shutil.copytree(world_dir / "vectors", tmp_path / "v")
    (tmp_path / "v/user_vectors.bin").write_bytes(b"2 5\n")
    with pytest.raises(DataError, match="mixed sizes"):
        build_samples(world_dir / "target.parquet", tmp_path / "v", tmp_path / "s")


def test_popularity_negatives_without_text_and_bad_options(world_dir, tmp_path):
    manifest = build(world_dir, tmp_path / "s", negative_sampling="popularity", text=False)
    assert manifest["coverage"]["source_history"]  # the log the vectors were pretrained on
    assert not (tmp_path / "s/train.txt").exists()
    ids = pq.read_table(tmp_path / "s/test_ids.parquet")
    assert ids.num_rows == manifest["splits"]["test"]["rows"] > 0
    with pytest.raises(ValueError, match="fraction"):
        SampleConfig(split="random", test_size=2)
    with pytest.raises(ValueError, match="negative_sampling"):
        SampleConfig(negative_sampling="hard")


def test_movielens_transfer_pipeline(tmp_path, ml100k):
    log = check_interactions(load_movielens(ml100k))
    split = transfer_split(log, target_after=0.5, target_rate=0.3, seed=0)
    pretrain(split.source, tmp_path / "v", PretrainConfig(dim=8, epochs=1))
    manifest = build_samples(split.target, tmp_path / "v", tmp_path / "s", source=split.source)
    assert manifest["coverage"]["source_history"]
    assert manifest["splits"]["train"]["positives"] > 1000
