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


class InMemoryUserStore:
    """Users and histories from a bundle's data snapshot (read-only)."""

    def __init__(self, dataset: Dataset) -> None:
        self._index = dataset.user_index()
        self._histories = dataset.histories()
        self._attributes = [user.attributes for user in dataset.users]

    def get_user(self, user_id: str) -> UserState | None:
        index = self._index.get(user_id)
        if index is None:
            return None
        return UserState(user_id=user_id, attributes=dict(self._attributes[index]),
                         history=self._histories[index], cf_index=index)

    def __len__(self) -> int:
        return len(self._index)
