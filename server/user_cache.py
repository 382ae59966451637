"""What the gateway computed for a user, kept for their next request: their profile vector, and their
candidates with the signals' features.

Both are invalidated per user by events and by ForgetUser, and entirely by a deploy (a vector from another
encoder must never meet this bundle's index). Each entry also carries a stamp of what it was computed
from (the bundle, the profile text, the request's exclusions...); a look-up with another stamp misses.
Bounded: least recently used users go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

import numpy as np


class PerUserCache:
    """One value per user, served only for the stamp it was stored with."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, user_id: str, stamp: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None or entry[0] != stamp:
                return None
            self._entries.move_to_end(user_id)
            return entry[1]

    def store(self, user_id: str, stamp: Hashable, value: Any) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[user_id] = (stamp, value)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, user_ids) -> None:
        with self._lock:
            for user_id in user_ids:
                self._entries.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class UserVectorCache(PerUserCache):
    """Profile vectors, per user, for the bundle that computed them from this very profile text."""

    def get(self, bundle_label: str, user_id: str, profile_text: str) -> np.ndarray | None:
        return self.lookup(user_id, (bundle_label, profile_text))

    def put(self, bundle_label: str, user_id: str, profile_text: str, vector: np.ndarray) -> None:
        self.store(user_id, (bundle_label, profile_text), vector)
