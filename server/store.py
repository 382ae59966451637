"""The users of a bundle's data snapshot (read-only, in memory): the base a user's state starts from.

What happened since the snapshot (events, forgotten users, added items) lives in the durable event
store (event_store.py); users.py merges the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmrec.export.dataset import Dataset


@dataclass(frozen=True, kw_only=True)
class UserState:
    user_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # item indices, oldest first
    cf_index: int | None = None  # row in the bundle's ALS user factors, when the user was trained on
    # Items the user rated below their own mean rating (empty for implicit data, where every weight is
    # equal): in the history as interactions, but never named as something they liked.
    rated_low: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


class InMemoryUserStore:
    """Users and histories from a bundle's data snapshot (read-only)."""

    def __init__(self, dataset: Dataset) -> None:
        self._index = dataset.user_index()
        self._histories = dataset.histories()
        self._attributes = [user.attributes for user in dataset.users]
        self._rated_low = rated_below_own_mean(dataset)

    def get_user(self, user_id: str) -> UserState | None:
        index = self._index.get(user_id)
        if index is None:
            return None
        return UserState(user_id=user_id, attributes=dict(self._attributes[index]),
                         history=self._histories[index], cf_index=index, rated_low=self._rated_low[index])

    def __len__(self) -> int:
        return len(self._index)


def rated_below_own_mean(dataset: Dataset) -> list[np.ndarray]:
    """Per user, the items whose latest weight is below that user's mean weight: a 1-star rating is an
    interaction the models learn from, not a like. Equal weights (implicit data) give none, and so does
    a data set loaded with an implicit threshold (every kept rating is a like there)."""
    if dataset.implicit_threshold is not None:
        return [np.zeros(0, np.int32) for _ in range(dataset.n_users)]
    interactions = dataset.interactions
    users, items, weights = interactions.user, interactions.item, interactions.weight.astype(np.float64)
    counts = np.bincount(users, minlength=dataset.n_users)
    means = np.bincount(users, weights=weights, minlength=dataset.n_users) / np.maximum(counts, 1)
    # Later rows win for an item rated twice (rows are in time order): keep each pair's last occurrence.
    order = np.lexsort((np.arange(len(users)), items, users))
    last = np.ones(len(order), bool)
    last[:-1] = (users[order][1:] != users[order][:-1]) | (items[order][1:] != items[order][:-1])
    latest = order[last]
    low = latest[weights[latest] < means[users[latest]] - 1e-9]
    by_user = np.argsort(users[low], kind="stable")
    low_users, low_items = users[low][by_user], items[low][by_user]
    bounds = np.searchsorted(low_users, np.arange(dataset.n_users + 1))
    return [np.sort(low_items[bounds[u] : bounds[u + 1]]) for u in range(dataset.n_users)]
