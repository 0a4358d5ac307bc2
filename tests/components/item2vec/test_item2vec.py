"""item2vec: pretraining (gensim), vector files, and user vectors from histories."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from gensim.models import KeyedVectors

from components.common.errors import DataError
from components.common.files import read_json
from components.common.user_vectors import (
    HistoryIndex,
    history_user_vectors,
    mean_of_last,
    user_vector,
)
from components.common.vectors import Vectors, is_word2vec_binary, read_vectors, write_vectors
from components.item2vec.pretrain import (
    MAX_SEQUENCE_ITEMS,
    PretrainConfig,
    pretrain,
    read_sequences,
)
from components.sample_gen.synthetic import synthetic_world

REPO = Path(__file__).resolve().parents[3]

SMALL = PretrainConfig(dim=8, min_count=1, epochs=2, seed=3)


def write_sequences(path, sequences: dict[str, list[str]]) -> None:
    path.write_text("".join(f"{user}\t{' '.join(items)}\n" for user, items in sequences.items()))


def tiny_sequences() -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    return {f"u{u}": [f"i{i}" for i in rng.integers(0, 30, size=12)] for u in range(40)}


def test_outputs_load_in_gensim_and_user_vectors_are_item_means(tmp_path):
    write_sequences(tmp_path / "seq.txt", tiny_sequences())
    result = pretrain(tmp_path / "seq.txt", tmp_path / "out", SMALL)
    for suffix, binary in ((".txt", False), (".bin", True)):
        keyed = KeyedVectors.load_word2vec_format(
            tmp_path / f"out/item_vectors{suffix}", binary=binary
        )
        np.testing.assert_allclose(keyed.vectors, result.item_vectors.vectors, atol=1e-6)
    users = read_vectors(tmp_path / "out/user_vectors.bin")
    expected, _ = user_vector(result.item_vectors, tiny_sequences()["u7"], last_n=5)
    np.testing.assert_allclose(users.vectors[users.index()["u7"]], expected, rtol=1e-6)
    manifest = read_json(tmp_path / "out/manifest.json")
    assert manifest["input"]["kind"] == "sequences" and len(manifest["input"]["sha256"]) == 64
    assert manifest["vocab_size"] == len(result.item_vectors) == manifest["items_seen"]
    assert manifest["parameters"]["dim"] == 8 and manifest["users"] == 40


def test_a_log_is_ordered_by_time_like_its_sequences(tmp_path):
    sequences = tiny_sequences()
    rows = [(u, item, t) for u, items in sequences.items() for t, item in enumerate(items)]
    rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    log = pa.table(dict(zip(["user", "item", "timestamp"], zip(*rows, strict=True), strict=True)))
    pacsv.write_csv(log, tmp_path / "log.csv")
    write_sequences(tmp_path / "seq.txt", dict(sorted(sequences.items())))
    from_log = pretrain(tmp_path / "log.csv", tmp_path / "a", SMALL)
    from_sequences = pretrain(tmp_path / "seq.txt", tmp_path / "b", SMALL)
    assert from_log.item_vectors.ids == from_sequences.item_vectors.ids
    np.testing.assert_array_equal(
        from_log.item_vectors.vectors, from_sequences.item_vectors.vectors
    )


def test_same_seed_gives_identical_vectors_across_interpreters(tmp_path):
    write_sequences(tmp_path / "seq.txt", tiny_sequences())
    here = pretrain(tmp_path / "seq.txt", tmp_path / "here", SMALL)
    # another interpreter with another hash seed than this one (random unless set)
    hash_seed = "7" if os.environ.get("PYTHONHASHSEED") != "7" else "8"
    script = (
        "import sys; from components.item2vec.pretrain import PretrainConfig, pretrain; "
        "pretrain(sys.argv[1], sys.argv[2], PretrainConfig(dim=8, min_count=1, epochs=2, seed=3))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "seq.txt"), str(tmp_path / "there")],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)},
    )
    there = read_vectors(tmp_path / "there/item_vectors.bin")
    assert there.ids == here.item_vectors.ids
    assert there.vectors.tobytes() == here.item_vectors.vectors.tobytes()
    other = pretrain(
        tmp_path / "seq.txt", tmp_path / "other", PretrainConfig(**{**asdict(SMALL), "seed": 4})
    )
    assert other.item_vectors.vectors.tobytes() != here.item_vectors.vectors.tobytes()


def test_min_count_drops_are_counted_and_named(tmp_path):
    sequences = {"a": ["x", "y", "x", "rare"], "b": ["y", "x", "y"], "c": ["rare2"]}
    write_sequences(tmp_path / "seq.txt", sequences)
    result = pretrain(tmp_path / "seq.txt", tmp_path / "out", PretrainConfig(dim=4, min_count=2))
    manifest = result.manifest
    assert manifest["items_dropped_min_count"] == 2
    assert sorted(manifest["items_dropped_examples"]) == ["rare", "rare2"]
    # c's only item fell below min_count: counted, and c has no user vector
    assert manifest["users_without_vector"] == 1 and manifest["users_single_item"] == 1
    assert "c" not in result.user_vectors.index()


def test_a_repeated_user_line_is_an_error_with_its_line(tmp_path):
    (tmp_path / "seq.txt").write_text("a\tx y\nb\ty z\na\tz\n")
    with pytest.raises(DataError) as error:
        read_sequences(tmp_path / "seq.txt")
    assert error.value.line == 3 and "line 1" in str(error.value)


def test_a_line_without_a_tab_is_an_error(tmp_path):
    (tmp_path / "seq.txt").write_text("a\tx y\nb y z\n")
    with pytest.raises(DataError) as error:
        read_sequences(tmp_path / "seq.txt")
    assert error.value.line == 2


def test_equal_timestamps_are_counted(tmp_path):
    log = pa.table({"user": ["a", "a", "a"], "item": ["x", "y", "z"], "timestamp": [1, 1, 2]})
    result = pretrain(log, tmp_path / "out", PretrainConfig(dim=4, min_count=1, epochs=1))
    assert result.manifest["tied_timestamps"] == 1


def recall_at(k: int, world, item_vectors, user_vectors) -> float:
    """Recall@k of each user's target items, ranked by user vector . item vector."""
    targets = defaultdict(set)
    for user, item in zip(
        world.target["user"].to_pylist(), world.target["item"].to_pylist(), strict=True
    ):
        targets[user].add(item)
    users = user_vectors.index()
    ids = np.array(item_vectors.ids)
    hits = total = 0
    for user, items in targets.items():
        scores = item_vectors.vectors @ user_vectors.vectors[users[user]]
        hits += len(set(ids[np.argsort(-scores)[:k]]) & items)
        total += len(items)
    return hits / total


def test_pretrained_vectors_transfer_when_the_domains_agree(tmp_path):
    config = PretrainConfig(dim=16, min_count=1, window=10, epochs=5)
    recalls = {}
    for agreement in (0.0, 0.9):
        world = synthetic_world(n_users=300, n_items=200, agreement=agreement, seed=1)
        result = pretrain(world.source, tmp_path / str(agreement), config)
        recalls[agreement] = recall_at(20, world, result.item_vectors, result.user_vectors)
    random_recall = 20 / 200
    assert recalls[0.9] > 3 * random_recall
    assert recalls[0.9] > recalls[0.0] + 0.15


def test_a_log_with_unknown_columns_is_refused_by_name(tmp_path):
    (tmp_path / "bad.csv").write_text("user,item,when\na,x,1\n")
    with pytest.raises(DataError, match=r"unknown \['when'\]"):
        pretrain(tmp_path / "bad.csv", tmp_path / "p", SMALL)
    assert not (tmp_path / "p").exists()


def test_min_weight_needs_a_weighted_log(tmp_path):
    write_sequences(tmp_path / "seq.txt", tiny_sequences())
    with pytest.raises(DataError, match="min_weight"):
        pretrain(tmp_path / "seq.txt", tmp_path / "o", PretrainConfig(min_weight=3.0))
    log = pa.table(
        {"user": ["a", "a", "b"], "item": ["x", "y", "x"], "timestamp": [1, 2, 3],
         "rating": [5.0, 1.0, 4.0]}
    )  # fmt: skip
    config = PretrainConfig(dim=4, min_count=1, epochs=1, min_weight=3.0)
    result = pretrain(log, tmp_path / "w", config)
    assert result.manifest["below_min_weight"] == 1 and result.item_vectors.ids == ["x"]


def test_sequences_longer_than_gensims_limit_are_cut_and_counted(tmp_path):
    from gensim.models.word2vec import MAX_WORDS_IN_BATCH

    assert MAX_SEQUENCE_ITEMS == MAX_WORDS_IN_BATCH
    # "late" occurs only past the limit: uncut, gensim would skip it silently
    long = [f"i{i % 7}" for i in range(MAX_SEQUENCE_ITEMS)] + ["late", "i1", "late", "i2"]
    write_sequences(tmp_path / "seq.txt", {"a": long, "b": ["i1", "i2"]})
    result = pretrain(
        tmp_path / "seq.txt", tmp_path / "out", PretrainConfig(dim=4, min_count=1, epochs=1)
    )
    assert result.manifest["training"]["sequences_cut_at_10000_items"] == 1


# -- vector files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v.txt", "v.bin", "v.npy"])
def test_vector_files_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    vectors = Vectors(rng.normal(size=(5, 3)).astype(np.float32), ["a", "b", "c", "d", "e"])
    write_vectors(tmp_path / name, vectors)
    back = read_vectors(tmp_path / name)
    np.testing.assert_allclose(back.vectors, vectors.vectors, rtol=1e-6)
    assert back.ids == (None if name.endswith(".npy") else vectors.ids)
    if not name.endswith(".npy"):
        assert is_word2vec_binary(tmp_path / name) == name.endswith(".bin")


def test_bad_vector_files_are_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_vectors(tmp_path / "none.txt")
    (tmp_path / "v.txt").write_text("no header here\n")
    with pytest.raises(DataError, match="not a word2vec file"):
        read_vectors(tmp_path / "v.txt")
    (tmp_path / "nan.txt").write_text("2 2\na 1.000000 2.000000\nb nan 1.000000\n")
    with pytest.raises(DataError, match=r"'b' \(row 2\) holds NaN"):
        read_vectors(tmp_path / "nan.txt")
    np.save(tmp_path / "flat.npy", np.zeros(3, np.float32))
    with pytest.raises(DataError, match="2-d array"):
        read_vectors(tmp_path / "flat.npy")


# -- user vectors ------------------------------------------------------------------------------


def test_user_vector_keeps_the_last_known_items_and_names_the_unknown():
    vectors = Vectors(np.arange(8, dtype=np.float32).reshape(4, 2), ["a", "b", "c", "d"])
    vector, unknown = user_vector(vectors, ["a", "zz", "b", "c", "d"], last_n=2)
    np.testing.assert_allclose(vector, (vectors.vectors[2] + vectors.vectors[3]) / 2)
    assert unknown == ["zz"]
    assert user_vector(vectors, ["zz"]) == (None, ["zz"])
    # half-life 1: the newest weighs 1, the one before 1/2
    vector, _ = user_vector(vectors, ["a", "b"], last_n=None, half_life=1.0)
    np.testing.assert_allclose(
        vector, (vectors.vectors[0] * 0.5 + vectors.vectors[1]) / 1.5, rtol=1e-6
    )


@pytest.mark.parametrize(("last_n", "half_life"), [(5, None), (None, None), (3, 2.0), (None, 1.5)])
def test_vectorised_user_vectors_equal_user_vector(last_n, half_life):
    rng = np.random.default_rng(2)
    vectors = Vectors(rng.standard_normal((30, 6)).astype(np.float32), [f"i{i}" for i in range(30)])
    rows = rng.integers(0, 30, size=200)
    starts = rng.integers(0, 100, size=50)
    ends = starts + rng.integers(0, 60, size=50)
    got = mean_of_last(vectors.vectors, rows, starts, ends, last_n=last_n, half_life=half_life)
    for q in range(50):
        history = [f"i{r}" for r in rows[starts[q] : ends[q]]]
        want, _ = user_vector(vectors, history, last_n=last_n, half_life=half_life)
        np.testing.assert_allclose(got[q], 0 if want is None else want, rtol=2e-5, atol=2e-6)


def test_history_index_excludes_events_at_the_query_time():
    index = HistoryIndex(
        user_codes=np.array([0, 0, 0, 1]),
        item_rows=np.array([0, 1, 2, 3]),
        timestamps=np.array([10, 20, 20, 5]),
        n_users=3,
    )
    starts, ends = index.before(np.array([0, 0, 0, 1, 2]), np.array([20, 21, 10, 6, 99]))
    np.testing.assert_array_equal(ends - starts, [1, 3, 0, 1, 0])


def test_history_user_vectors_match_user_vector_per_user():
    rng = np.random.default_rng(1)
    items = Vectors(rng.normal(size=(40, 6)).astype(np.float32))
    users, rows, times = rng.integers(0, 5, 100), rng.integers(-1, 40, 100), rng.permutation(100)
    vectors, has = history_user_vectors(items.vectors, users, rows, times, n_users=6, last_n=3)
    assert not has[5]
    for u in range(5):
        order = np.argsort(times[users == u], kind="stable")
        history = [str(r) if r >= 0 else "unknown" for r in rows[users == u][order]]
        expected, _ = user_vector(items, history, last_n=3)
        np.testing.assert_allclose(vectors[u], expected, rtol=1e-5, atol=1e-6)
