"""Item2Vec component: its executor on a small real log, reproducibility, errors, the spec."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components.common.errors import DataError
from components.common.vectors import read_vectors
from components.item2vec.component import (
    Executor,
    Item2Vec,
    Item2VecVectors,
    pretrain_config,
)
from components.sample_gen.synthetic import synthetic_world

DIM = 8
PARAMS = dict(
    dim=DIM, window=5, min_count=2, epochs=2, negative=5, seed=0, reproducible=True, workers=2
)


@pytest.fixture(scope="module")
def source_log(tmp_path_factory):
    """The source domain of a small synthetic world, as Parquet and as CSV."""
    root = tmp_path_factory.mktemp("logs")
    world = synthetic_world(n_users=200, n_items=120, source_per_user=20, seed=3)
    pq.write_table(world.source, root / "source.parquet")
    pacsv.write_csv(world.source, root / "source.csv")
    return {"parquet": root / "source.parquet", "csv": root / "source.csv", "table": world.source}


def run(log, tmp_path, name="out", **overrides):
    out = Item2VecVectors()
    out.uri = str(tmp_path / name)
    Executor().Do({}, {"item_vectors": [out]}, {**PARAMS, "log": str(log), **overrides})
    return out


def test_vectors_in_word2vec_text_binary_and_parquet_with_a_manifest(source_log, tmp_path):
    out = run(source_log["parquet"], tmp_path)
    text = read_vectors(tmp_path / "out" / "item_vectors.txt")
    binary = read_vectors(tmp_path / "out" / "item_vectors.bin")
    table = pq.read_table(tmp_path / "out" / "item_vectors.parquet")
    assert text.ids == binary.ids == table["item_id"].to_pylist()
    np.testing.assert_allclose(text.vectors, binary.vectors, rtol=1e-6)
    np.testing.assert_array_equal(
        np.stack(table["vector"].to_numpy(zero_copy_only=False)), binary.vectors
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["count"] == len(text) == out.get_int_custom_property("count") > 50
    assert manifest["dim"] == DIM == out.get_int_custom_property("dim")
    assert manifest["parameters"]["window"] == 5 and manifest["parameters"]["workers"] == 1
    assert manifest["words_per_second"] > 0 and manifest["reproducible"] is True
    assert manifest["input"]["sha256"]


def test_reproducible_mode_gives_identical_vectors_and_the_seed_matters(source_log, tmp_path):
    run(source_log["parquet"], tmp_path, "a")
    run(source_log["csv"], tmp_path, "b")  # the same log as CSV
    run(source_log["parquet"], tmp_path, "c", seed=1)
    a, b, c = (read_vectors(tmp_path / n / "item_vectors.bin") for n in "abc")
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)


def test_reproducible_means_one_worker_whatever_workers_says():
    assert pretrain_config({**PARAMS, "workers": 4}).workers == 1
    assert pretrain_config({**PARAMS, "workers": 4, "reproducible": False}).workers == 4


def test_a_bad_log_is_named_with_its_line(source_log, tmp_path):
    table = source_log["table"].slice(0, 50)
    users = table["user"].to_pylist()
    users[6] = ""
    bad = table.set_column(0, "user", pa.array(users))
    pacsv.write_csv(bad, tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"bad.csv, line 8: empty value in column 'user'"):
        run(tmp_path / "bad.csv", tmp_path)
    pacsv.write_csv(table.drop(["timestamp"]), tmp_path / "no_time.csv")
    with pytest.raises(DataError, match=r"no_time.csv: .*missing \['timestamp'\]"):
        run(tmp_path / "no_time.csv", tmp_path)


def test_component_records_the_log_and_checks_parameters(source_log):
    component = Item2Vec(str(source_log["parquet"]), dim=DIM, seed=7)
    params = component.exec_properties
    assert params["log"] == str(source_log["parquet"].resolve())
    assert params["seed"] == 7 and params["reproducible"] is True
    assert str(source_log["parquet"].stat().st_size) in params["log_fingerprint"]
    with pytest.raises(ValueError, match="dim must be at least 1"):
        Item2Vec(str(source_log["parquet"]), dim=0)
