"""The shared sparse history matrix: one definition of "interacted" for every CF model."""

from __future__ import annotations

import numpy as np

from lmrec.export.models.matrices import binary_matrix, history_matrix


def test_a_history_matrix_is_the_binary_matrix_of_its_in_range_pairs():
    rng = np.random.default_rng(0)
    # repeated items, items the model never saw (beyond n_items), negative padding, an empty history
    histories = [rng.integers(-2, 60, size=int(n)) for n in rng.integers(0, 40, size=25)] + [np.zeros(0, np.int64)]
    got = history_matrix(histories, n_items=50)
    rows = np.concatenate([np.full(len(h), r) for r, h in enumerate(histories)])
    cols = np.concatenate(histories)
    keep = (cols >= 0) & (cols < 50)
    expected = binary_matrix(rows[keep], cols[keep], (len(histories), 50))
    assert got.shape == (26, 50) and got.dtype == np.float32
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)
    dense = np.random.default_rng(1).normal(size=(50, 7)).astype(np.float32)
    np.testing.assert_array_equal(got @ dense, expected @ dense)


def test_no_histories_make_an_empty_matrix():
    assert history_matrix([], n_items=5).shape == (0, 5)
