"""The score blend: normalisation, candidate filling, ranking and attribution."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.server.fusion import BlendWeights, fill_candidates, normalise, rank_candidates


def test_normalise_min_max_and_constant():
    out = normalise(np.array([2.0, 4.0, 3.0]))
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(normalise(np.array([5.0, 5.0, 5.0])), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(normalise(np.array([-1.0])), [0.0])


def test_fill_candidates_excludes_and_deduplicates():
    candidates = np.array([5, 3, 5, 1, 7])
    out = fill_candidates(candidates, excluded=np.array([3]), fallback_order=np.arange(10), k=2)
    assert sorted(out.tolist()) == [1, 5, 7]


def test_fill_candidates_tops_up_from_the_fallback_in_its_order():
    fallback = np.array([9, 3, 0, 8, 1, 2, 4, 5, 6, 7])
    out = fill_candidates(np.array([4, 2]), excluded=np.array([9, 2]), fallback_order=fallback, k=4)
    assert out.tolist() == [4, 3, 0, 8]
    assert len(set(out.tolist())) == len(out)


def test_fill_candidates_cannot_exceed_what_is_left():
    out = fill_candidates(np.array([0]), excluded=np.array([1, 2]), fallback_order=np.arange(4), k=10)
    assert sorted(out.tolist()) == [0, 3]


def test_fill_candidates_with_nothing_proposed():
    out = fill_candidates(np.zeros(0, np.int64), excluded=np.zeros(0, np.int64), fallback_order=np.array([2, 0, 1]),
                          k=2)
    assert out.tolist() == [2, 0]


def test_rank_candidates_orders_by_blended_score_and_attributes_signals():
    candidates = np.array([10, 11, 12, 13])
    features = {
        "lm": np.array([0.9, 0.1, 0.5, 0.2]),
        "als": np.array([0.0, 2.0, 1.0, 0.5]),
        "popular": np.array([1.0, 1.0, 1.0, 1.0]),  # constant: carries no preference
    }
    weights = BlendWeights(lm=0.5, als=0.4, popular=0.1)
    ranked = rank_candidates(candidates, features, weights, k=3)
    assert len(ranked) == 3
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    # Recompute the blend independently.
    lm = (features["lm"] - 0.1) / 0.8
    als = features["als"] / 2.0
    expected = 0.5 * lm + 0.4 * als
    order = np.argsort(-expected, kind="stable")[:3]
    assert [r.item for r in ranked] == candidates[order].tolist()
    for r in ranked:
        assert r.score == pytest.approx(sum(r.signals.values()), abs=1e-6)
        assert set(r.signals) == {"lm", "als", "popular"}
        assert r.found_by == max(r.signals, key=r.signals.get)
    top = ranked[0]
    assert top.item == 10 and top.found_by == "lm"
    assert top.signals["lm"] == pytest.approx(0.5) and top.signals["als"] == pytest.approx(0.0)
    assert next(r for r in ranked if r.item == 11).found_by == "als"


def test_rank_candidates_rescales_weights_when_a_signal_is_missing():
    candidates = np.array([0, 1, 2])
    ranked = rank_candidates(candidates, {"popular": np.array([1.0, 3.0, 2.0])}, BlendWeights(), k=3)
    assert [r.item for r in ranked] == [1, 2, 0]
    assert ranked[0].score == pytest.approx(1.0)  # popular alone carries the whole weight
    assert set(ranked[0].signals) == {"popular"}


def test_rank_candidates_ties_break_by_candidate_order_and_found_by_defaults_to_popular():
    candidates = np.array([3, 1, 2])
    ranked = rank_candidates(candidates, {"lm": np.zeros(3), "popular": np.zeros(3)}, BlendWeights(), k=3)
    assert [r.item for r in ranked] == [3, 1, 2]
    assert all(r.found_by == "popular" and r.score == 0.0 for r in ranked)


def test_when_every_signal_ties_found_by_names_one_with_evidence_for_the_item():
    # One candidate (say, the only item a filter allows): normalised, every contribution is 0.
    ranked = rank_candidates(np.array([7]), {"lm": np.array([0.4]), "popular": np.array([0.0])}, BlendWeights(), k=1)
    assert ranked[0].found_by == "lm"  # not "popular": nobody has touched it


def test_rank_candidates_zero_weight_signal_is_ignored():
    candidates = np.array([0, 1])
    features = {"lm": np.array([1.0, 0.0]), "als": np.array([0.0, 1.0])}
    ranked = rank_candidates(candidates, features, BlendWeights(lm=0.0, als=1.0, popular=0.0), k=2)
    assert [r.item for r in ranked] == [1, 0]
    assert set(ranked[0].signals) == {"als"}


def test_rank_candidates_empty_and_k_larger_than_candidates():
    assert rank_candidates(np.zeros(0, np.int64), {}, BlendWeights(), k=5) == []
    ranked = rank_candidates(np.array([4, 5]), {"popular": np.array([1.0, 2.0])}, BlendWeights(), k=5)
    assert [r.item for r in ranked] == [5, 4]
