"""What the gateway computed for a user, kept for their next request: their profile vector
(`UserVectorCache`), and, in `PerUserCache`s, their candidates with the signals' features, the user as
resolved from the snapshot and their recorded events, and their last answer.

All of them are invalidated per user by events and by ForgetUser, and entirely by a deploy (a vector from
another encoder must never meet this bundle's index). Each entry also carries a stamp of what it was computed
from (the bundle, the profile text, the request's exclusions...); a look-up with another stamp misses.
Bounded: least recently used users go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

import numpy as np


class InvalidationLog:
    """When each user's cached values last went stale (an event, ForgetUser; everyone's: a deploy).

    A request reads `clock()` before it reads the user's history, and stores `as_of` it: a value computed
    from a history that an invalidation has since replaced is then not stored. Recent invalidations are
    remembered per user; older ones only as a bound. Caches of one gateway share one log.
    """

    def __init__(self, remembered: int = 100_000) -> None:
        self.remembered = remembered
        self._lock = threading.Lock()
        self._clock = 0
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self._remembered_since = 0

    def clock(self) -> int:
        return self._clock

    def record(self, user_ids=None) -> None:
        """`user_ids` went stale now; None: everyone."""
        with self._lock:
            self._clock += 1
            if user_ids is None:
                self._invalidated.clear()
                self._remembered_since = self._clock
                return
            for user_id in user_ids:
                self._invalidated[user_id] = self._clock
                self._invalidated.move_to_end(user_id)
            while len(self._invalidated) > self.remembered:
                _, when = self._invalidated.popitem(last=False)
                self._remembered_since = when

    def stale(self, user_id: str, as_of: int) -> bool:
        """Whether `user_id` was (or may have been) invalidated after `as_of`."""
        with self._lock:
            return self._remembered_since > as_of or self._invalidated.get(user_id, -1) > as_of


class PerUserCache:
    """One value per user, served only for the stamp it was stored with."""

    def __init__(self, max_entries: int = 100_000, *, log: InvalidationLog | None = None) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.log = log if log is not None else InvalidationLog(max(max_entries, 1024))

    def lookup(self, user_id: str, stamp: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None or entry[0] != stamp:
                return None
            self._entries.move_to_end(user_id)
            return entry[1]

    def clock(self) -> int:
        return self.log.clock()

    def store(self, user_id: str, stamp: Hashable, value: Any, *, as_of: int | None = None) -> None:
        if self.max_entries <= 0:
            return
        if as_of is not None and self.log.stale(user_id, as_of):
            return  # invalidated while the request ran: the value may come from the old history
        with self._lock:
            self._entries[user_id] = (stamp, value)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, user_ids) -> None:
        self.log.record(user_ids)
        with self._lock:
            for user_id in user_ids:
                self._entries.pop(user_id, None)

    def clear(self) -> None:
        self.log.record(None)
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class UserVectorCache(PerUserCache):
    """Profile vectors, per user, for the bundle that computed them from this very profile text."""

    def get(self, bundle_label: str, user_id: str, profile_text: str) -> np.ndarray | None:
        return self.lookup(user_id, (bundle_label, profile_text))

    def put(self, bundle_label: str, user_id: str, profile_text: str, vector: np.ndarray, *,
            as_of: int | None = None) -> None:
        self.store(user_id, (bundle_label, profile_text), vector, as_of=as_of)
