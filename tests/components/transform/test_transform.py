"""preprocessing_fn through tf.Transform's Beam implementation; the checked-in schema."""

from __future__ import annotations

import numpy as np
import pytest

from components.example_gen.schema import CHECKED_IN, recipe_schema, schema_file_for, schema_text
from tests.tft_helpers import analyze, random_samples


def test_zscore_is_per_dimension(tmp_path):
    labels, users, items = random_samples(200, 6, 5)
    _, rows = analyze(tmp_path, labels, users, items, "zscore")
    got = np.stack([r["user_vector"] for r in rows])
    expected = (users - users.mean(0)) / users.std(0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.std(0), 1, atol=1e-3)  # every dimension, not the tensor


def test_l2_and_none(tmp_path):
    labels, users, items = random_samples(50, 6, 5)
    _, rows = analyze(tmp_path / "l2", labels, users, items, "l2")
    got = np.stack([r["item_vector"] for r in rows])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    _, rows = analyze(tmp_path / "none", labels, users, items, "none")
    np.testing.assert_array_equal(np.stack([r["user_vector"] for r in rows]), users)
    assert [int(r["label"][0]) for r in rows] == list(labels)


def test_unknown_mode_is_refused(tmp_path):
    labels, users, items = random_samples(10, 3, 3)
    with pytest.raises(Exception, match="normalize must be one of zscore, l2, none"):
        analyze(tmp_path, labels, users, items, "minmax")


def test_checked_in_schema_is_the_generated_one():
    assert CHECKED_IN.read_text() == schema_text(128, 128)


def test_schema_follows_the_configured_sizes(tmp_path):
    schema = recipe_schema(32, 16)
    dims = {f.name: [d.size for d in f.shape.dim] for f in schema.feature}
    assert dims["user_vector"] == [32] and dims["item_vector"] == [16]
    optional = {f.name for f in schema.feature if f.presence.min_fraction == 0}
    assert optional == {"item_id", "user_id"}
    path = schema_file_for(32, 16, tmp_path)
    assert path.read_text() == schema_text(32, 16)
    assert schema_file_for(128, 128, tmp_path) == CHECKED_IN
