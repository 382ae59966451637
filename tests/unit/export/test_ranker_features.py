"""Candidate selection and ranker features: computed at the candidates only, equal to their whole-row definitions."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.ranker import candidate_features, rank_keys, ranks_at, select_candidates


def _scores(n_users: int, n_items: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[np.ndarray]]:
    """Signals as the fused model makes them, with the ties real ones have (sparse CF and graph
    scores are mostly 0; coarse ones repeat values)."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n_users, n_items)).astype(np.float32)
    mostly_zero = np.where(rng.random((n_users, n_items)) < 0.8, 0.0, rng.random((n_users, n_items))).astype(np.float32)
    coarse = np.round(rng.random((n_users, n_items)), 1).astype(np.float32)
    constant = np.ones((n_users, n_items), np.float32)  # a signal with no preference: every item tied
    signals = {"dense": dense, "sparse": mostly_zero, "coarse": coarse, "constant": constant}
    extra = {"popularity": np.broadcast_to(rng.random(n_items).astype(np.float32), (n_users, n_items))}
    excluded = [rng.choice(n_items, size=int(rng.integers(0, n_items // 3)), replace=False) for _ in range(n_users)]
    return signals, extra, excluded


def _masked(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    masked = scores.astype(np.float64, copy=True)
    masked[..., excluded] = -np.inf
    return masked


def _ranks_by_full_sort(scores: np.ndarray, excluded: list[np.ndarray]) -> np.ndarray:
    """Definition: each item's position in a stable argsort of the negated, masked row."""
    masked = scores.astype(np.float64, copy=True)
    for row, items in enumerate(excluded):
        masked[row, items] = -np.inf
    order = np.argsort(-masked, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    return ranks


def _features_by_full_rows(signals, extra, excluded, candidates) -> list[np.ndarray]:
    """Definition: every feature computed for the whole catalogue, then read at the candidates."""
    columns = []
    for scores in signals.values():
        mean, std = scores.mean(axis=1, keepdims=True), scores.std(axis=1, keepdims=True)
        columns.append((scores - mean) / np.where(std > 1e-12, std, 1.0))
        columns.append((1.0 / (1.0 + _ranks_by_full_sort(scores, excluded))).astype(np.float32))
    columns.extend(extra.values())
    return [np.stack([matrix[row, items] for matrix in columns], axis=1).astype(np.float32)
            for row, items in enumerate(candidates)]


def test_ranks_at_the_asked_items_are_their_positions_in_a_stable_full_sort():
    signals, _, excluded = _scores(n_users=20, n_items=300, seed=1)
    rng = np.random.default_rng(2)
    for scores in signals.values():
        expected = _ranks_by_full_sort(scores, excluded)
        for row in range(len(scores)):
            items = rng.choice(300, size=40, replace=False)  # excluded ones among them too
            mask = np.isin(np.arange(300), excluded[row])
            ordered = np.sort(rank_keys(scores[row : row + 1], mask), axis=1)
            [got] = ranks_at(ordered, scores[row : row + 1], mask, items)
            np.testing.assert_array_equal(got, expected[row, items])


def _ranks(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    mask = np.isin(np.arange(len(scores)), excluded)
    return ranks_at(np.sort(rank_keys(scores[None, :], mask), axis=1), scores[None, :], mask, np.arange(len(scores)))[0]


def test_ranks_order_signed_zeros_as_equal_infinities_in_place_and_nans_last_as_a_stable_sort_does():
    scores = np.array([0.5, np.nan, 0.0, 2.0, -np.nan, -1.0, -0.0, np.inf, -np.inf, 0.0], np.float32)
    expected = _ranks_by_full_sort(scores[None, :], [np.array([5])])[0]
    np.testing.assert_array_equal(_ranks(scores, np.array([5])), expected)
    # inf first; 0.0, -0.0 and 0.0 by index; the excluded item (-1.0) and -inf tied, by index; the NaNs last.
    assert expected.tolist() == [2, 8, 3, 1, 9, 6, 4, 0, 7, 5]


def test_an_excluded_item_ties_with_minus_infinity_by_index_even_when_it_scored_nan():
    scores = np.array([-np.inf, np.nan, 1.0, -np.inf, np.nan], np.float32)
    excluded = np.array([1, 2])  # a NaN and a finite score: both rank as -inf would
    expected = _ranks_by_full_sort(scores[None, :], [excluded])[0]
    assert expected.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(_ranks(scores, excluded), expected)


def test_a_float64_signal_ranks_by_its_float32_values_as_its_features_do():
    """Scores apart only beyond float32's precision tie in the ranks (by index), as in the features."""
    scores = 1.0 + 1e-9 * np.arange(6, dtype=np.float64)  # in float64 the last is best
    assert len(np.unique(scores.astype(np.float32))) == 1
    np.testing.assert_array_equal(_ranks(scores, np.zeros(0, np.int64)), np.arange(6))


def test_rank_keys_refuse_item_indices_beyond_32_bits():
    class Wide:  # only its shape is read before the check
        shape = (1, 2 ** 32)
    with pytest.raises(ValueError, match="4294967296 items"):
        rank_keys(Wide(), np.zeros(0, bool))


def test_candidate_features_equal_their_whole_row_definitions_bit_for_bit():
    signals, extra, excluded = _scores(n_users=30, n_items=400, seed=3)
    candidates = select_candidates(signals, excluded, per_signal=25)
    features, names = candidate_features(signals, extra, excluded, candidates)
    assert names == ["dense_z", "dense_rr", "sparse_z", "sparse_rr", "coarse_z", "coarse_rr", "constant_z",
                     "constant_rr", "popularity"]
    for got, expected in zip(features, _features_by_full_rows(signals, extra, excluded, candidates)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_one_user_alone_gets_the_same_candidates_and_features_as_in_a_batch():
    signals, extra, excluded = _scores(n_users=12, n_items=250, seed=4)
    candidates = select_candidates(signals, excluded, per_signal=20)
    features, _ = candidate_features(signals, extra, excluded, candidates)
    for row in range(12):
        alone = {name: scores[row : row + 1] for name, scores in signals.items()}
        alone_extra = {name: matrix[row : row + 1] for name, matrix in extra.items()}
        [own_candidates] = select_candidates(alone, [excluded[row]], per_signal=20)
        [own_features], _ = candidate_features(alone, alone_extra, [excluded[row]], [own_candidates])
        np.testing.assert_array_equal(own_candidates, candidates[row])
        np.testing.assert_array_equal(own_features, features[row])


def test_candidates_are_each_signals_unseen_top_items_and_never_an_excluded_one():
    signals, _, excluded = _scores(n_users=15, n_items=200, seed=5)
    candidates = select_candidates({"dense": signals["dense"]}, excluded, per_signal=10)
    for row, chosen in enumerate(candidates):
        masked = _masked(signals["dense"][row], excluded[row])
        expected = np.sort(np.argsort(-masked, kind="stable")[:10])
        np.testing.assert_array_equal(chosen, expected)
        assert chosen.dtype == np.int64 and not np.isin(chosen, excluded[row]).any()


def test_features_without_extra_columns_are_the_signal_columns_alone():
    signals, _, excluded = _scores(n_users=3, n_items=50, seed=6)
    candidates = select_candidates(signals, excluded, per_signal=5)
    features, names = candidate_features(signals, {}, excluded, candidates)
    assert len(names) == 8 and all(f.shape == (len(c), 8) for f, c in zip(features, candidates))


def test_a_user_with_every_item_excluded_has_no_candidates():
    scores = {"dense": np.arange(6, dtype=np.float32)[None, :]}
    [chosen] = select_candidates(scores, [np.arange(6)], per_signal=3)
    assert chosen.dtype == np.int64 and len(chosen) == 0


def test_a_float64_signal_chooses_its_candidates_at_its_own_precision():
    """Features are float32, but a signal scored in float64 (scores apart only beyond float32's
    precision) picks its top items by its own values, as candidate selection always has."""
    scores = {"fine": (1.0 + 1e-9 * np.arange(40, dtype=np.float64))[None, :]}
    assert len(np.unique(scores["fine"].astype(np.float32))) == 1
    [chosen] = select_candidates(scores, [np.array([39])], per_signal=3)
    np.testing.assert_array_equal(chosen, [36, 37, 38])


def test_a_similarity_feature_is_computed_at_the_candidates_alone_and_equals_its_whole_row():
    from lmrec.export.ranker import Similarity

    signals, _, excluded = _scores(n_users=6, n_items=300, seed=7)
    rng = np.random.default_rng(8)
    similarity = Similarity(rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32))

    candidates = select_candidates(signals, excluded, per_signal=10)
    features, names = candidate_features(signals, {"sim": similarity}, excluded, candidates)
    whole = similarity.whole()
    assert names[-1] == "sim" and whole.shape == (6, 300)
    for row, items in enumerate(candidates):
        np.testing.assert_allclose(features[row][:, -1], whole[row, items], rtol=1e-5, atol=1e-6)
