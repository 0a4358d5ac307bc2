"""Interaction logs: reading and checking them, MovieLens, the transfer split, the synthetic
two-domain world."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components.common.errors import DataError
from components.common.interactions import check_interactions, read_interactions
from components.sample_gen.movielens import load_movielens
from components.sample_gen.split import transfer_split
from components.sample_gen.synthetic import synthetic_world


def small_log() -> pa.Table:
    return pa.table(
        {
            "user": ["a", "a", "b", "b", "b"],
            "item": ["x", "y", "x", "z", "y"],
            "timestamp": [3, 1, 5, 2, 2],
            "rating": [4.0, 5.0, 1.0, 3.0, 2.0],
        }
    )


def test_movielens_100k_loads_every_rating(ml100k):
    log = load_movielens(ml100k)
    assert log.column_names == ["user", "item", "timestamp", "rating"]
    assert log.num_rows == 100_000
    assert len(set(log["user"].to_pylist())) == 943
    assert len(set(log["item"].to_pylist())) == 1682
    assert check_interactions(log).column_names == ["user", "item", "timestamp", "weight"]


def test_movielens_1m_double_colon_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    log = load_movielens(tmp_path)
    assert log["item"].to_pylist() == ["1193", "661"]
    assert log["timestamp"].to_pylist() == [978300760, 978302109]
    assert log["rating"].to_pylist() == [5.0, 3.0]


def test_movielens_folder_without_ratings_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        load_movielens(tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_every_table_format_reads_to_the_same_log(tmp_path, suffix):
    path = tmp_path / f"log{suffix}"
    if suffix == ".parquet":
        pq.write_table(small_log(), path)
    else:
        options = pacsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ",")
        pacsv.write_csv(small_log(), path, options)
    log = read_interactions(path)
    assert log.equals(check_interactions(small_log()))
    assert log["user"].type == pa.string()


def test_unknown_and_missing_columns_are_named(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,time\na,x,1\n")
    with pytest.raises(DataError, match=r"missing \['timestamp'\], unknown \['time'\]"):
        read_interactions(path)


def test_empty_value_points_at_its_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\na,x,1\nb,,2\n")
    with pytest.raises(DataError) as error:
        read_interactions(path)
    assert error.value.line == 3 and "item" in str(error.value)
    assert str(error.value).startswith(f"{path}, line 3: empty value in column 'item'")


def test_fractional_timestamps_are_refused():
    log = pa.table({"user": ["a"], "item": ["x"], "timestamp": [1.5]})
    with pytest.raises(DataError, match="integers"):
        check_interactions(log)


def test_synthetic_world_is_seeded():
    first = synthetic_world(n_users=50, n_items=40, seed=3)
    again = synthetic_world(n_users=50, n_items=40, seed=3)
    other = synthetic_world(n_users=50, n_items=40, seed=4)
    assert first.source.equals(again.source) and first.target.equals(again.target)
    assert not first.source.equals(other.source)


def test_synthetic_target_is_small_late_and_without_ties():
    world = synthetic_world(n_users=200, n_items=100, seed=0)
    assert world.target.num_rows < world.source.num_rows / 5
    span_start = 10**9 * (1 - world.config.target_span)
    assert min(world.target["timestamp"].to_pylist()) >= span_start
    for log in (world.source, world.target):
        pairs = set(zip(log["user"].to_pylist(), log["timestamp"].to_pylist(), strict=True))
        assert len(pairs) == log.num_rows


def test_agreement_sets_how_alike_target_tastes_are():
    for agreement in (0.0, 0.5, 1.0):
        world = synthetic_world(n_users=500, n_items=20, agreement=agreement, seed=1)
        cosine = (world.user_tastes * world.target_tastes).sum(axis=1).mean()
        # E[cos] = agreement: the fresh part is independent of the source taste
        assert cosine == pytest.approx(agreement, abs=0.05)


def test_transfer_split_partitions_the_log():
    log = check_interactions(synthetic_world(n_users=100, n_items=50, seed=2).source)
    split = transfer_split(log, target_after=0.5, target_rate=0.3, seed=7)
    assert split.source.num_rows + split.target.num_rows == log.num_rows
    assert min(split.target["timestamp"].to_pylist()) >= split.target_start
    late = int((log["timestamp"].to_numpy() >= split.target_start).sum())
    assert split.target.num_rows == pytest.approx(0.3 * late, rel=0.15)
    again = transfer_split(log, target_after=0.5, target_rate=0.3, seed=7)
    assert again.target.equals(split.target)


def test_transfer_split_refuses_an_empty_target():
    log = check_interactions(small_log())
    with pytest.raises(DataError, match="target domain is empty"):
        transfer_split(log, target_after=0.9, target_rate=1e-9)


def test_a_missing_file_or_an_unknown_suffix_is_an_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_interactions(tmp_path / "log.csv")
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(DataError, match="unknown table suffix"):
        read_interactions(tmp_path / "log.json")


def test_weight_and_rating_together_are_refused():
    log = small_log().append_column("weight", pa.array([1.0] * 5))
    with pytest.raises(DataError, match="both 'weight' and 'rating'"):
        check_interactions(log)
