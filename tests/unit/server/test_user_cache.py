from __future__ import annotations

import numpy as np

from lmrec.server.user_cache import PerUserCache, UserVectorCache


def test_a_vector_is_served_only_for_the_same_bundle_and_profile_text():
    cache = UserVectorCache()
    cache.put("1", "u", "text", np.ones(3))
    assert cache.get("1", "u", "text") is not None
    assert cache.get("2", "u", "text") is None  # another bundle's encoder
    assert cache.get("1", "u", "other text") is None  # the history changed


def test_invalidate_clear_and_bound():
    cache = UserVectorCache(max_entries=2)
    for user in ("a", "b", "c"):
        cache.put("1", user, "t", np.zeros(2))
    assert len(cache) == 2 and cache.get("1", "a", "t") is None  # least recently used went first
    cache.invalidate(["b"])
    assert cache.get("1", "b", "t") is None and cache.get("1", "c", "t") is not None
    cache.clear()
    assert len(cache) == 0


def test_an_entry_is_served_only_for_its_stamp_and_a_zero_bound_keeps_nothing():
    cache = PerUserCache(max_entries=2)
    cache.store("u", ("1", 0, ("x",)), "candidates")
    assert cache.lookup("u", ("1", 0, ("x",))) == "candidates"
    assert cache.lookup("u", ("1", 1, ("x",))) is None and cache.lookup("v", ("1", 0, ("x",))) is None
    cache.store("u", ("1", 1, ()), "newer")  # one entry per user: the latest stamp replaces the older
    assert len(cache) == 1 and cache.lookup("u", ("1", 0, ("x",))) is None
    off = PerUserCache(max_entries=0)
    off.store("u", "stamp", "value")
    assert len(off) == 0 and off.lookup("u", "stamp") is None


def test_a_value_computed_before_an_invalidation_is_not_stored_after_it():
    cache = PerUserCache()
    before = cache.clock()  # a request reads the clock, then the user's history ...
    cache.invalidate(["u"])  # ... an event (or ForgetUser) for that user lands meanwhile
    cache.store("u", "stamp", "from the old history", as_of=before)
    assert cache.lookup("u", "stamp") is None
    cache.store("v", "stamp", "another user's", as_of=before)  # other users are unaffected
    assert cache.lookup("v", "stamp") == "another user's"
    cache.clear()  # a deploy: nothing computed before it is stored after it
    cache.store("v", "stamp", "old bundle", as_of=before)
    assert cache.lookup("v", "stamp") is None
    now = cache.clock()
    cache.store("u", "stamp", "fresh", as_of=now)
    assert cache.lookup("u", "stamp") == "fresh"


def test_invalidations_beyond_those_remembered_still_block_older_values():
    cache = PerUserCache(max_entries=1)  # remembers at least 1024 invalidated users
    before = cache.clock()
    cache.invalidate([f"user-{n}" for n in range(2000)])
    cache.store("user-0", "stamp", "stale", as_of=before)
    assert cache.lookup("user-0", "stamp") is None
