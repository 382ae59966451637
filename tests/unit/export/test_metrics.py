import math

import numpy as np
import pytest
import scipy.sparse as sp

from lmrec.export.metrics import NO_ITEM, compute_metrics, paired_bootstrap_ratio, per_user_values, rank_top_k


def _log2_discount(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


# --- compute_metrics -------------------------------------------------------------------------


def test_single_targets_hit_at_rank_1_at_rank_k_and_miss():
    top = np.array([[3, 5, 7], [1, 2, 4], [9, 8, 0]])
    targets = [np.array([3]), np.array([4]), np.array([6])]  # rank 1, rank 3 (=K), no hit

    m = compute_metrics(top, targets, n_items=10, ks=(1, 3))

    expected = {
        "recall@1": 1 / 3,
        "precision@1": 1 / 3,
        "f1@1": 1 / 3,
        "hit@1": 1 / 3,
        "mrr@1": 1 / 3,
        "ndcg@1": 1 / 3,
        "coverage@1": 3 / 10,
        "recall@3": 2 / 3,
        "precision@3": (1 / 3 + 1 / 3) / 3,
        "f1@3": (0.5 + 0.5) / 3,  # per user: P=1/3, R=1 -> 2PR/(P+R) = 0.5
        "hit@3": 2 / 3,
        "mrr@3": (1 + 1 / 3) / 3,
        "ndcg@3": (1 + _log2_discount(3)) / 3,
        "coverage@3": 9 / 10,
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_multiple_targets():
    top = np.array([[0, 1, 2, 3]])
    targets = [np.array([1, 3, 5])]  # hits at ranks 2 and 4

    m = compute_metrics(top, targets, n_items=6, ks=(4,))

    precision, recall = 2 / 4, 2 / 3
    assert m["recall@4"] == pytest.approx(recall)
    assert m["precision@4"] == pytest.approx(precision)
    assert m["f1@4"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert m["hit@4"] == 1.0
    assert m["mrr@4"] == pytest.approx(1 / 2)
    dcg = _log2_discount(2) + _log2_discount(4)
    idcg = _log2_discount(1) + _log2_discount(2) + _log2_discount(3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)
    assert m["coverage@4"] == pytest.approx(4 / 6)


def test_ideal_dcg_is_capped_at_k_targets():
    top = np.array([[0, 9]])
    targets = [np.array([0, 1, 2, 3, 4])]  # more targets than K

    m = compute_metrics(top, targets, n_items=10, ks=(2,))

    assert m["ndcg@2"] == pytest.approx(1 / (1 + _log2_discount(2)))
    assert m["recall@2"] == pytest.approx(1 / 5)


def test_no_hits_gives_zero_everywhere_but_coverage():
    top = np.array([[0, 1], [0, 2]])
    targets = [np.array([5]), np.array([6, 7])]

    m = compute_metrics(top, targets, n_items=8, ks=(2,))

    for name in ("recall", "ndcg", "precision", "f1", "hit", "mrr"):
        assert m[f"{name}@2"] == 0.0
    assert m["coverage@2"] == pytest.approx(3 / 8)


def test_duplicate_targets_count_once():
    top = np.array([[4, 1]])
    m_dup = compute_metrics(top, [np.array([4, 4, 2])], n_items=5, ks=(2,))
    m_once = compute_metrics(top, [np.array([4, 2])], n_items=5, ks=(2,))
    assert m_dup == m_once
    assert m_once["recall@2"] == pytest.approx(1 / 2)


def test_padding_never_counts_as_a_hit_nor_as_coverage():
    # -1 encodes "no item"; for user 1 it must not alias user 0's last item (index n_items - 1).
    top = np.array([[2, NO_ITEM], [NO_ITEM, NO_ITEM]])
    targets = [np.array([0]), np.array([2])]

    m = compute_metrics(top, targets, n_items=3, ks=(2,))

    assert m["hit@2"] == 0.0
    assert m["coverage@2"] == pytest.approx(1 / 3)


def test_metrics_at_smaller_k_only_look_at_the_prefix():
    top = np.array([[0, 1, 2]])
    m = compute_metrics(top, [np.array([2])], n_items=3, ks=(2, 3))
    assert m["hit@2"] == 0.0 and m["hit@3"] == 1.0
    assert m["mrr@3"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "top, targets",
    [
        (np.array([[0, 1]]), [np.array([], np.int64)]),  # a user without targets
        (np.array([[0]]), [np.array([0])]),  # shorter than max K
        (np.array([[0, 1]]), [np.array([7])]),  # target out of range
        (np.array([[0, 1], [1, 0]]), [np.array([0])]),  # row count mismatch
    ],
)
def test_invalid_input_is_rejected(top, targets):
    with pytest.raises(ValueError):
        compute_metrics(top, targets, n_items=3, ks=(2,))


# --- rank_top_k ----------------------------------------------------------------------------


def test_ranks_by_score_then_lower_index_on_ties():
    scores = np.array([[1.0, 2.0, 2.0, 0.0, 2.0]], np.float32)
    assert rank_top_k(scores, None, 2).tolist() == [[1, 2]]
    assert rank_top_k(scores, None, 4).tolist() == [[1, 2, 4, 0]]


def test_all_equal_scores_give_item_order():
    scores = np.zeros((2, 6), np.float32)
    assert rank_top_k(scores, None, 3).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_excluded_items_are_never_returned():
    scores = np.array([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    exclude = [np.array([0, 2]), np.array([3])]
    assert rank_top_k(scores, exclude, 2).tolist() == [[1, 3], [2, 1]]


def test_sparse_exclusion_matches_list_exclusion():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 30)).astype(np.float32)
    exclude = [rng.choice(30, size=n, replace=False) for n in (0, 3, 10, 29, 1)]
    rows = np.repeat(np.arange(5), [len(e) for e in exclude])
    mask = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(exclude))), shape=(5, 30))

    np.testing.assert_array_equal(rank_top_k(scores, exclude, 8), rank_top_k(scores, mask, 8))


def test_rows_with_too_few_eligible_items_are_padded():
    scores = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert rank_top_k(scores, [np.array([0, 2])], 3).tolist() == [[1, NO_ITEM, NO_ITEM]]
    assert rank_top_k(scores, None, 5).tolist() == [[2, 1, 0, NO_ITEM, NO_ITEM]]


def test_nan_and_minus_inf_scores_are_not_recommended():
    scores = np.array([[np.nan, -np.inf, 0.5, 1.0]], np.float32)
    assert rank_top_k(scores, None, 4).tolist() == [[3, 2, NO_ITEM, NO_ITEM]]


def test_matches_a_full_sort_on_heavily_tied_scores():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # many ties at every cut-off
    exclude = [rng.choice(40, size=rng.integers(0, 10), replace=False) for _ in range(50)]

    top = rank_top_k(scores, exclude, 7)

    for row, excluded in enumerate(exclude):
        candidates = np.setdiff1d(np.arange(40), excluded)
        reference = candidates[np.lexsort((candidates, -scores[row, candidates]))][:7]
        np.testing.assert_array_equal(top[row], reference)


def test_does_not_modify_the_callers_scores():
    scores = np.array([[1.0, 2.0, 3.0]], np.float32)
    rank_top_k(scores, [np.array([1])], 2)
    assert scores.tolist() == [[1.0, 2.0, 3.0]]


# --- per-user values and the paired interval ----------------------------------------------------


def test_per_user_values_average_to_the_reported_metric():
    rng = np.random.default_rng(3)
    top = np.stack([rng.permutation(30)[:12] for _ in range(25)])
    targets = [rng.choice(30, size=rng.integers(1, 5), replace=False) for _ in range(25)]
    reported = compute_metrics(top, targets, n_items=30, ks=(5, 10))
    for metric in ("ndcg@10", "recall@5", "hit@10", "mrr@5", "precision@10", "f1@5"):
        values = per_user_values(top, targets, n_items=30, metric=metric)
        assert values.shape == (25,)
        assert values.mean() == pytest.approx(reported[metric])


@pytest.mark.parametrize("metric, message", [("ndcg", "look like"), ("ndcg@0", "look like"), ("ndcg@\u00b2", "look like"),
                                             ("coverage@10", "no per-user value"), ("ndcg@20", "does not fit")])
def test_per_user_values_name_what_they_cannot_give(metric, message):
    with pytest.raises(ValueError, match=message):
        per_user_values(np.zeros((2, 10), np.int64), [np.array([1]), np.array([2])], n_items=5, metric=metric)
    with pytest.raises(ValueError, match="at least one target"):
        per_user_values(np.zeros((2, 10), np.int64), [np.array([1]), np.array([], np.int64)], n_items=5)


def test_paired_bootstrap_ratio():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    # A method that doubles every user's value doubles the ratio in every resample.
    assert paired_bootstrap_ratio(2 * base, base) == pytest.approx((2.0, 2.0))
    # Noise around equality: the interval holds the measured ratio and shrinks with more users.
    other = base + rng.normal(0, 0.2, 400)
    low, high = paired_bootstrap_ratio(other, base)
    assert low < other.mean() / base.mean() < high
    wide = paired_bootstrap_ratio(other[:40], base[:40])
    assert wide[1] - wide[0] > high - low
    assert paired_bootstrap_ratio(other, base) == (low, high)  # seeded: the same interval every time
    assert paired_bootstrap_ratio(base, np.zeros(400)) is None  # undefined ratio
    with pytest.raises(ValueError, match="equal, non-empty length"):
        paired_bootstrap_ratio(base, base[:10])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_ratio(base, base, level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap_ratio(base, base, resamples=0)
    # Drawn in chunks for large test sets: still every resample, still one interval.
    many = rng.random(300_000)
    assert paired_bootstrap_ratio(many, many, resamples=20) == pytest.approx((1.0, 1.0))
