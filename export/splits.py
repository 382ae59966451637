"""Evaluation splits: `split_dataset(dataset, protocol)` -> train / valid / test (see design.md).

- temporal-loo: per user, last interaction -> test, second last -> valid (canonical order, so of two
  interactions at the same second the higher item index is the later); users with < 3: all train.
- random-811: per user a seeded 80/10/10 (RecBole's general setting); users with < 3: all train.
- cold-items: a seeded share of the interacted items is cold (half valid, half test: every interaction
  on them goes there); the warm rest is split like random-811.
- sparse-users: a seeded share of the users is known by its first few interactions only (as a new user
  would be): the next one is valid, the one after it test, and the rest is never used. Every other user's
  whole history is training data (the community the sparse users are recommended from).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lmrec.export.dataset import Dataset, Interactions, Split

Protocol = Literal["temporal-loo", "random-811", "cold-items", "sparse-users"]
PROTOCOLS: tuple[str, ...] = ("temporal-loo", "random-811", "cold-items", "sparse-users")
# A user needs this many interactions to give one to valid and one to test and keep one to learn from.
MIN_INTERACTIONS_TO_EVALUATE = 3
# random-811: valid and test each get floor(n / 10) (at least 1) of a user's n interactions.
HELD_OUT_DIVISOR = 10

# sparse-users: the share of the users (among those with enough interactions) made sparse, and how many
# of their first interactions the models know (one more, the valid one, when testing).
SPARSE_USER_SHARE = 0.25
SPARSE_KNOWN_INTERACTIONS = 3

_UNUSED, _TRAIN, _VALID, _TEST = -1, 0, 1, 2


def split_dataset(
    dataset: Dataset, protocol: Protocol, *, seed: int = 42, cold_item_share: float = 0.1,
    sparse_user_share: float = SPARSE_USER_SHARE, sparse_known: int = SPARSE_KNOWN_INTERACTIONS,
) -> Split:
    """Split `dataset.interactions` by `protocol`; every part comes back in canonical order."""
    if not 0.0 < cold_item_share < 1.0:
        raise ValueError(f"cold_item_share must be in (0, 1), got {cold_item_share}")
    if not 0.0 < sparse_user_share < 1.0:
        raise ValueError(f"sparse_user_share must be in (0, 1), got {sparse_user_share}")
    if sparse_known < 1:
        raise ValueError(f"sparse_known must be at least 1, got {sparse_known}")
    interactions = dataset.interactions.sorted()
    if protocol == "temporal-loo":
        split = _split(protocol, seed, interactions, _temporal_loo_parts(interactions))
    elif protocol == "random-811":
        rng = np.random.default_rng(seed)
        split = _split(protocol, seed, interactions, _random_811_parts(interactions.user, rng))
    elif protocol == "cold-items":
        split = _cold_items(interactions, seed, cold_item_share)
    elif protocol == "sparse-users":
        rng = np.random.default_rng(seed)
        split = _split(protocol, seed, interactions,
                       _sparse_users_parts(interactions.user, rng, sparse_user_share, sparse_known))
    else:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    for name in ("train", "valid", "test"):
        if len(getattr(split, name)) == 0:
            raise ValueError(
                f"{protocol} split of {dataset.name!r} has an empty {name} set "
                f"(users need at least {sparse_known + 2 if protocol == 'sparse-users' else MIN_INTERACTIONS_TO_EVALUATE} "
                "interactions to be evaluated)"
            )
    return split


def _split(protocol: str, seed: int, interactions: Interactions, part: np.ndarray, cold=None) -> Split:
    return Split(
        protocol=protocol,
        seed=seed,
        train=interactions.select(part == _TRAIN),
        valid=interactions.select(part == _VALID),
        test=interactions.select(part == _TEST),
        **({} if cold is None else {"cold_items": cold}),
    )


def _positions_from_end(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by user: (0 for a user's last row, 1 for the one before, ...; the user's count)."""
    n = len(user)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n]
    counts = np.repeat(ends - starts, ends - starts)
    end_of_row = np.repeat(ends, ends - starts)
    return end_of_row - 1 - np.arange(n), counts


def _temporal_loo_parts(interactions: Interactions) -> np.ndarray:
    from_end, counts = _positions_from_end(interactions.user)
    part = np.full(len(interactions), _TRAIN, dtype=np.int8)
    evaluated = counts >= MIN_INTERACTIONS_TO_EVALUATE
    part[evaluated & (from_end == 0)] = _TEST
    part[evaluated & (from_end == 1)] = _VALID
    return part


def _random_811_parts(user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seeded per-user shuffle; the first floor(n/10) (>= 1) go to test, the next as many to valid.

    `user` must be grouped (canonical order); the result is aligned with it.
    """
    n = len(user)
    # A random rank inside each user's group: sort by (user, random key).
    order = np.lexsort((rng.random(n), user))
    rank_from_end, counts = _positions_from_end(user[order])
    rank = counts - 1 - rank_from_end
    held_out = np.maximum(counts // HELD_OUT_DIVISOR, 1)
    part_sorted = np.full(n, _TRAIN, dtype=np.int8)
    evaluated = counts >= MIN_INTERACTIONS_TO_EVALUATE
    part_sorted[evaluated & (rank < held_out)] = _TEST
    part_sorted[evaluated & (rank >= held_out) & (rank < 2 * held_out)] = _VALID
    part = np.empty(n, dtype=np.int8)
    part[order] = part_sorted
    return part


def _sparse_users_parts(user: np.ndarray, rng: np.random.Generator, share: float, known: int) -> np.ndarray:
    """A seeded `share` of the users with at least known + 2 interactions keep their first `known` in train,
    the next goes to valid and the one after to test; the rest of their rows is unused. `user` grouped."""
    from_end, counts = _positions_from_end(user)
    rank = counts - 1 - from_end  # 0 for a user's first interaction
    eligible = np.unique(user[counts >= known + 2])
    sparse = np.zeros(int(user.max()) + 1 if len(user) else 0, dtype=bool)
    n_sparse = max(1, int(round(share * len(eligible)))) if len(eligible) else 0
    sparse[rng.choice(eligible, size=n_sparse, replace=False)] = True
    part = np.full(len(user), _TRAIN, dtype=np.int8)
    is_sparse = sparse[user]
    part[is_sparse & (rank == known)] = _VALID
    part[is_sparse & (rank == known + 1)] = _TEST
    part[is_sparse & (rank > known + 1)] = _UNUSED
    return part


def _cold_items(interactions: Interactions, seed: int, share: float) -> Split:
    rng = np.random.default_rng(seed)
    interacted = np.unique(interactions.item)
    n_cold = int(round(share * len(interacted)))
    if n_cold < 2:
        raise ValueError(
            f"cold_item_share {share} of {len(interacted)} interacted items gives {n_cold} cold items; "
            "need at least 2 (one valid, one test)"
        )
    cold = rng.choice(interacted, n_cold, replace=False)
    valid_cold, test_cold = np.sort(cold[: n_cold // 2]), np.sort(cold[n_cold // 2 :])

    part = np.full(len(interactions), _TRAIN, dtype=np.int8)
    on_valid_cold = np.isin(interactions.item, valid_cold)
    on_test_cold = np.isin(interactions.item, test_cold)
    part[on_valid_cold] = _VALID
    part[on_test_cold] = _TEST
    warm = ~(on_valid_cold | on_test_cold)
    part[warm] = _random_811_parts(interactions.user[warm], rng)

    # A user without any training interaction has no profile to recommend from: drop their targets.
    has_train = np.zeros(int(interactions.user.max()) + 1 if len(interactions) else 0, dtype=bool)
    has_train[interactions.user[part == _TRAIN]] = True
    part[~has_train[interactions.user]] = _UNUSED
    return _split("cold-items", seed, interactions, part, cold=np.sort(cold).astype(np.int32))
