"""Top-K ranking and ranking metrics (RecBole's definitions, averaged over users).

Full ranking only: every item is a candidate except the ones a caller excludes (a user's known
items); sampled negatives are never used, so figures compare with published full-ranking ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

# Slot value in a top-K list when fewer than K items were eligible (all others excluded).
NO_ITEM = -1

METRIC_NAMES = ("recall", "ndcg", "precision", "f1", "hit", "mrr", "coverage")


def rank_top_k(scores: np.ndarray, exclude: Sequence[np.ndarray] | sp.spmatrix | None, k: int) -> np.ndarray:
    """The `k` best items per row of `scores`, best first, as an (n_rows, k) int64 array.

    `exclude[j]` (item indices, or row j of a sparse (n_rows, n_items) matrix) are never returned.
    Equal scores rank the lower item index first, so results do not depend on numpy's partition
    internals. Rows with fewer than `k` eligible items are padded with `NO_ITEM` (-1); items scored
    -inf or NaN count as ineligible too.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users, items), got shape {scores.shape}")
    n_rows, n_items = scores.shape
    if k < 1:
        raise ValueError("k must be >= 1")
    scores[np.isnan(scores)] = -np.inf
    _mask_excluded(scores, exclude)

    k_eff = min(k, n_items)
    if k_eff == 0 or n_rows == 0:
        return np.full((n_rows, k), NO_ITEM, np.int64)

    # The k-th best score per row is the threshold: everything above it is in; of the items equal
    # to it, the lowest indices fill the remaining slots (argpartition alone would pick arbitrary
    # tied items at the boundary).
    kth_best = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1 : k_eff]
    above = scores > kth_best
    tied = scores == kth_best
    slots_left = k_eff - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= slots_left))

    rows, cols = np.nonzero(chosen)  # row-major: columns ascending within each row
    cols = cols.reshape(n_rows, k_eff)
    chosen_scores = np.take_along_axis(scores, cols, axis=1)
    # Stable sort on descending score keeps ascending item index among ties.
    order = np.argsort(-chosen_scores, axis=1, kind="stable")
    top = np.take_along_axis(cols, order, axis=1).astype(np.int64)
    top[np.take_along_axis(chosen_scores, order, axis=1) == -np.inf] = NO_ITEM
    if k_eff < k:
        top = np.hstack([top, np.full((n_rows, k - k_eff), NO_ITEM, np.int64)])
    return top


def _mask_excluded(scores: np.ndarray, exclude: Sequence[np.ndarray] | sp.spmatrix | None) -> None:
    if exclude is None:
        return
    n_rows, n_items = scores.shape
    if sp.issparse(exclude):
        mask = sp.csr_matrix(exclude)
        if mask.shape != scores.shape:
            raise ValueError(f"exclude mask shape {mask.shape} != scores shape {scores.shape}")
        rows = np.repeat(np.arange(n_rows), np.diff(mask.indptr))
        cols = mask.indices
    else:
        if len(exclude) != n_rows:
            raise ValueError(f"exclude has {len(exclude)} rows, scores {n_rows}")
        lengths = [len(e) for e in exclude]
        rows = np.repeat(np.arange(n_rows), lengths)
        cols = np.concatenate([np.asarray(e, np.int64) for e in exclude]) if n_rows else np.zeros(0, np.int64)
    scores[rows, cols.astype(np.int64, copy=False)] = -np.inf


def compute_metrics(
    top_items: np.ndarray,
    targets: Sequence[np.ndarray],
    *,
    n_items: int,
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """Recall, NDCG, Precision, F1, Hit, MRR and item coverage at each K, averaged over users.

    `top_items[j]` is user j's ranked list (at least max(ks) long, -1 for empty slots) and
    `targets[j]` the items that count as hits (one or several; duplicates count once; must not be
    empty: a user without targets has no defined recall, so the caller leaves them out).
    """
    top_items = np.asarray(top_items, dtype=np.int64)
    n_users = len(targets)
    if top_items.ndim != 2 or top_items.shape[0] != n_users:
        raise ValueError(f"top_items shape {top_items.shape} does not match {n_users} users")
    if n_users == 0:
        raise ValueError("no users to evaluate")
    max_k = max(ks)
    if top_items.shape[1] < max_k:
        raise ValueError(f"top_items has {top_items.shape[1]} columns, need {max_k}")

    hits, n_targets = _hit_matrix(top_items[:, :max_k], targets, n_items)
    if (n_targets == 0).any():
        raise ValueError("every evaluated user needs at least one target item")

    out: dict[str, float] = {}
    for k in ks:
        out.update(_metrics_at(hits[:, :k], n_targets, top_items[:, :k], k, n_items))
    return out


def _hit_matrix(top: np.ndarray, targets: Sequence[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, K) bool: is top[j, r] one of user j's targets; and the distinct target count per user."""
    n_users = len(targets)
    lengths = np.fromiter((len(t) for t in targets), np.int64, n_users)
    target_users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    target_items = np.concatenate([np.asarray(t, np.int64) for t in targets])
    if target_items.size and (target_items.min() < 0 or target_items.max() >= n_items):
        raise ValueError(f"target item indices must lie in [0, {n_items})")
    # One integer key per (user, item) pair turns per-user membership into a single np.isin.
    target_keys = np.unique(target_users * n_items + target_items)
    n_targets = np.bincount(target_keys // n_items, minlength=n_users)
    top_keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + top
    hits = np.isin(top_keys, target_keys) & (top != NO_ITEM)  # -1 would alias the previous user's last item
    return hits, n_targets


# The metric each evaluation record keeps per test user (the quality bars' metric).
PER_USER_METRIC = "ndcg@10"


def per_user_values(top_items: np.ndarray, targets: Sequence[np.ndarray], *, n_items: int,
                    metric: str = PER_USER_METRIC) -> np.ndarray:
    """One user's value of `metric` (e.g. "ndcg@10") per row: what `compute_metrics` averages, kept per user
    so that two methods measured on the same test users can be compared user by user."""
    name, _, k_text = metric.partition("@")
    if not k_text.isdecimal() or int(k_text) < 1:
        raise ValueError(f"metric {metric!r} must look like 'ndcg@10'")
    k = int(k_text)
    top_items = np.asarray(top_items, dtype=np.int64)
    if top_items.ndim != 2 or top_items.shape[0] != len(targets) or top_items.shape[1] < k:
        raise ValueError(f"top_items shape {top_items.shape} does not fit {len(targets)} users at K={k}")
    hits, n_targets = _hit_matrix(top_items[:, :k], targets, n_items)
    if (n_targets == 0).any():
        raise ValueError("every evaluated user needs at least one target item")
    values = _per_user_at(hits, n_targets, k)
    if name not in values:
        raise ValueError(f"no per-user value for {name!r}; one of {', '.join(sorted(values))}")
    return values[name]


def paired_bootstrap_ratio(numerator: np.ndarray, denominator: np.ndarray, *, resamples: int = 2000,
                           level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of mean(numerator) / mean(denominator) when the test users are drawn again with
    replacement, the same users for both: per-user values of two methods on one test set. None when a
    resample's denominator is 0 (the ratio is undefined there)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if numerator.shape != denominator.shape or numerator.ndim != 1 or not len(numerator):
        raise ValueError(f"paired values need one equal, non-empty length; got {numerator.shape} and "
                         f"{denominator.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    ratios = []
    # In chunks: a (resamples, users) index matrix for 100k test users would take gigabytes at once.
    chunk = max(1, 2_000_000 // len(numerator))
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, len(numerator), size=(min(chunk, resamples - start), len(numerator)))
        below = denominator[draws].mean(axis=1)
        if (below <= 0).any():
            return None
        ratios.append(numerator[draws].mean(axis=1) / below)
    ratios = np.concatenate(ratios)
    tail = (1 - level) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def _per_user_at(hits: np.ndarray, n_targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    n_hits = hits.sum(axis=1)
    recall = n_hits / n_targets
    precision = n_hits / k
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(recall), where=denominator > 0)

    any_hit = n_hits > 0
    first_hit_rank = hits.argmax(axis=1) + 1
    mrr = np.where(any_hit, 1.0 / first_hit_rank, 0.0)

    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal_dcg = np.cumsum(discounts)[np.minimum(n_targets, k) - 1]
    return {"recall": recall, "ndcg": dcg / ideal_dcg, "precision": precision, "f1": f1,
            "hit": any_hit.astype(np.float64), "mrr": mrr}


def _metrics_at(hits: np.ndarray, n_targets: np.ndarray, top: np.ndarray, k: int, n_items: int) -> dict[str, float]:
    per_user = _per_user_at(hits, n_targets, k)
    shown = np.unique(top)
    coverage = np.count_nonzero(shown != NO_ITEM) / n_items
    return {
        f"recall@{k}": float(per_user["recall"].mean()),
        f"ndcg@{k}": float(per_user["ndcg"].mean()),
        f"precision@{k}": float(per_user["precision"].mean()),
        f"f1@{k}": float(per_user["f1"].mean()),
        f"hit@{k}": float(per_user["hit"].mean()),
        f"mrr@{k}": float(per_user["mrr"].mean()),
        f"coverage@{k}": float(coverage),
    }
