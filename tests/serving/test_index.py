"""Every index backend: recall against exact search, true scores, save/load round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.common.errors import ArtifactError, DataError
from serving.index import BACKENDS, ItemIndex, load_index, make_index, read_manifest


def folded_like(n_items: int, n_queries: int, dim: int = 32, seed: int = 0):
    """Items relu(cluster centre + noise) with spread norms; queries w ⊙ relu(interests)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, dim))
    items = np.maximum(
        centres[rng.integers(0, 100, n_items)] + 0.5 * rng.normal(size=(n_items, dim)), 0
    )
    items *= rng.lognormal(0, 0.3, size=(n_items, 1))
    users = np.maximum(
        centres[rng.integers(0, 100, n_queries)] + 0.5 * rng.normal(size=(n_queries, dim)), 0
    )
    return items.astype(np.float32), (users * rng.normal(1, 0.5, dim)).astype(np.float32)


ITEMS, QUERIES = folded_like(5000, 100)
EXACT = np.argsort(-(QUERIES @ ITEMS.T), axis=1)[:, :100]
# recall@100 against exact search these backends must reach at their defaults on this data
MIN_RECALL = {"flat": 1.0, "hnsw": 0.9, "ivf": 0.9, "annoy": 0.9}
BUILT: dict[str, ItemIndex] = {}


def built(backend: str) -> ItemIndex:
    if backend not in BUILT:
        BUILT[backend] = make_index(backend).build(ITEMS, [f"item{i}" for i in range(len(ITEMS))])
    return BUILT[backend]


def recall(rows: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows, EXACT, strict=True)]))


def test_all_four_backends_are_registered():
    assert set(BACKENDS) == {"flat", "hnsw", "ivf", "annoy"}
    assert [BACKENDS[b].is_exact for b in ("flat", "hnsw", "ivf", "annoy")] == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize("backend", sorted(MIN_RECALL))
def test_backend_recall_at_100_against_exact_search(backend):
    rows, _ = built(backend).search_rows(QUERIES, 100)
    assert recall(rows) >= MIN_RECALL[backend]


@pytest.mark.parametrize("backend", sorted(MIN_RECALL))
def test_scores_are_true_inner_products_best_first(backend):
    ids, scores = built(backend).search(QUERIES[:10], 20)
    rows = np.vectorize(lambda name: int(name[4:]))(ids)
    expected = np.einsum("nd,nkd->nk", QUERIES[:10], ITEMS[rows])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("backend", sorted(MIN_RECALL))
def test_save_load_round_trip_gives_the_same_answers(backend, tmp_path):
    index = built(backend)
    index.save(tmp_path / "index", {"model": "abc123"})
    loaded = load_index(tmp_path / "index")
    assert type(loaded) is type(index) and loaded.params == index.params
    ids, scores = index.search(QUERIES[:20], 10)
    ids2, scores2 = loaded.search(QUERIES[:20], 10)
    assert (ids == ids2).all()
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)
    manifest = read_manifest(tmp_path / "index")
    assert manifest["backend"] == backend and manifest["count"] == len(ITEMS)
    assert manifest["model"] == "abc123" and manifest["is_exact"] == (backend == "flat")
    assert json.loads((tmp_path / "index" / "ids.json").read_text())[:2] == ["item0", "item1"]


@pytest.mark.parametrize("backend", sorted(MIN_RECALL))
def test_vectors_give_back_the_indexed_embeddings_before_and_after_a_reload(backend, tmp_path):
    index = built(backend)
    np.testing.assert_array_equal(index.vectors(), ITEMS)
    index.save(tmp_path / "index")
    np.testing.assert_array_equal(load_index(tmp_path / "index").vectors(), ITEMS)


def test_hnsw_ip_metric_returns_inner_products_and_its_vectors():
    index = make_index("hnsw", metric="ip").build(ITEMS[:500])
    rows, scores = index.search_rows(QUERIES[:10], 10)
    np.testing.assert_allclose(
        scores, np.einsum("nd,nkd->nk", QUERIES[:10], ITEMS[rows]), rtol=1e-4
    )
    np.testing.assert_array_equal(index.vectors(), ITEMS[:500])


def test_hnsw_l2_transform_still_returns_inner_products():
    index = make_index("hnsw", metric="l2-transform", ef_search=512).build(ITEMS)
    rows, scores = index.search_rows(QUERIES[:10], 10)
    np.testing.assert_allclose(
        scores, np.einsum("nd,nkd->nk", QUERIES[:10], ITEMS[rows]), rtol=1e-4
    )


def test_k_larger_than_the_catalogue_returns_every_item():
    index = make_index("flat").build(ITEMS[:7])
    ids, scores = index.search(QUERIES[:2], 50)
    assert ids.shape == (2, 7) and sorted(ids[0]) == [str(i) for i in range(7)]


def test_bad_backend_parameter_and_dimension_are_refused(tmp_path):
    with pytest.raises(DataError, match="unknown index backend"):
        make_index("lsh")
    with pytest.raises(DataError, match="bad parameters"):
        make_index("hnsw", ef=10)
    with pytest.raises(DataError, match="16-d but the index is 32-d"):
        built("flat").search(np.zeros((1, 16), np.float32), 5)
    with pytest.raises(ArtifactError, match="not a finetower index"):
        load_index(tmp_path)


def test_mips_to_l2_ranks_items_by_inner_product():
    from serving.index.faiss_backends import mips_to_l2

    transformed = mips_to_l2(ITEMS, width=40)
    assert transformed.shape == (len(ITEMS), 40) and not transformed[:, 33:].any()
    norms = np.linalg.norm(transformed, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-4)  # every item on one sphere
    padded = np.zeros((10, 40), np.float32)
    padded[:, :32] = QUERIES[:10]
    distances = ((padded[:, None, :] - transformed[None]) ** 2).sum(-1)
    by_l2 = np.argsort(distances, axis=1, kind="stable")[:, :20]
    by_ip = np.argsort(-(QUERIES[:10] @ ITEMS.T), axis=1, kind="stable")[:, :20]
    assert np.mean(by_l2 == by_ip) > 0.99  # float rounding may swap near-ties


def test_an_index_saved_with_other_parameters_is_refused_clearly(tmp_path):
    built("ivf").save(tmp_path / "index")
    manifest = read_manifest(tmp_path / "index")
    manifest["params"]["pq_m"] = 16  # what an earlier ivf backend recorded
    (tmp_path / "index" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="rebuild the index"):
        load_index(tmp_path / "index")


def test_ivf_items_added_a_part_at_a_time_give_the_same_index(monkeypatch):
    from serving.index import faiss_backends

    queries = np.random.default_rng(5).normal(size=(20, ITEMS.shape[1])).astype(np.float32)
    whole = make_index("ivf").build(ITEMS)
    monkeypatch.setattr(faiss_backends, "ADD_ROWS", 333)  # parts that do not divide the items
    parts = make_index("ivf").build(ITEMS)
    for got, expected in zip(parts.search(queries, 50), whole.search(queries, 50), strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(parts.vectors(), whole.vectors())
