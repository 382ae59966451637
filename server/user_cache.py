"""Profile vectors the gateway computed, per user, for the bundle that computed them.

Invalidated per user by events and by ForgetUser, and entirely by a deploy (a vector from another
encoder must never meet this bundle's index). Bounded: least recently used entries go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CachedProfile:
    bundle_label: str
    profile_text: str
    vector: np.ndarray


class UserVectorCache:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedProfile] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bundle_label: str, user_id: str, profile_text: str) -> np.ndarray | None:
        """The cached vector, if it was computed by this bundle from this very profile text."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None or entry.bundle_label != bundle_label or entry.profile_text != profile_text:
                return None
            self._entries.move_to_end(user_id)
            return entry.vector

    def put(self, bundle_label: str, user_id: str, profile_text: str, vector: np.ndarray) -> None:
        with self._lock:
            self._entries[user_id] = CachedProfile(bundle_label, profile_text, vector)
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
