"""The in-memory user store behind the gateway."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo
from lmrec.server.store import InMemoryUserStore, rated_below_own_mean


@pytest.fixture
def dataset() -> Dataset:
    # user 0 watched items 2 then 0 then 1; user 1 watched item 1; user 2 nothing.
    interactions = Interactions.from_lists(user=[0, 0, 0, 1], item=[2, 0, 1, 1], timestamp=[10, 20, 30, 5])
    return Dataset(
        name="t",
        user_ids=("alice", "bob", "carol"),
        item_ids=("a", "b", "c"),
        items=tuple(ItemInfo(title=t) for t in "ABC"),
        users=(UserInfo(attributes={"age": "30"}), UserInfo(), UserInfo(attributes={"occupation": "chef"})),
        interactions=interactions,
    )


def test_known_user_has_history_oldest_first_and_cf_row(dataset):
    store = InMemoryUserStore(dataset)
    alice = store.get_user("alice")
    assert alice.user_id == "alice" and alice.cf_index == 0
    assert alice.attributes == {"age": "30"}
    np.testing.assert_array_equal(alice.history, [2, 0, 1])
    bob = store.get_user("bob")
    assert bob.cf_index == 1 and bob.attributes == {}
    np.testing.assert_array_equal(bob.history, [1])


def test_user_without_interactions(dataset):
    carol = InMemoryUserStore(dataset).get_user("carol")
    assert carol.cf_index == 2 and len(carol.history) == 0 and carol.attributes == {"occupation": "chef"}


def test_unknown_user_is_none(dataset):
    store = InMemoryUserStore(dataset)
    assert store.get_user("mallory") is None
    assert store.get_user("") is None
    assert len(store) == 3


def test_returned_attributes_are_a_copy(dataset):
    store = InMemoryUserStore(dataset)
    store.get_user("alice").attributes["age"] = "99"
    assert store.get_user("alice").attributes == {"age": "30"}


def test_store_on_the_tiny_bundle(tiny_bundle):
    store = InMemoryUserStore(tiny_bundle.dataset)
    assert len(store) == tiny_bundle.dataset.n_users
    user_id = tiny_bundle.dataset.user_ids[4]
    state = store.get_user(user_id)
    it = tiny_bundle.dataset.interactions
    mine = it.user == 4
    np.testing.assert_array_equal(state.history, it.item[mine])
    assert (np.diff(it.timestamp[mine]) >= 0).all()


def test_items_rated_below_the_users_own_mean_are_marked_and_implicit_data_marks_none(dataset):
    assert all(len(low) == 0 for low in rated_below_own_mean(dataset))  # every weight 1
    rated = Interactions.from_lists(user=[0, 0, 0, 1, 1, 0], item=[2, 0, 1, 1, 2, 0], weight=[5, 1, 4, 3, 3, 2],
                                    timestamp=[10, 20, 30, 5, 6, 40])
    store_dataset = Dataset(name="t", user_ids=dataset.user_ids, item_ids=dataset.item_ids, items=dataset.items,
                            users=dataset.users, interactions=rated)
    store = InMemoryUserStore(store_dataset)
    # alice: mean of 5, 1, 4, 2 is 3; item 0's latest rating (2) is below it, item 1 (4) and 2 (5) are not.
    np.testing.assert_array_equal(store.get_user("alice").rated_low, [0])
    assert len(store.get_user("bob").rated_low) == 0  # rated everything alike
    assert len(store.get_user("carol").rated_low) == 0
    # Loaded with an implicit threshold, every kept rating is a like: a 4 below a user's mean of 4.5 too.
    from dataclasses import replace

    thresholded = InMemoryUserStore(replace(store_dataset, implicit_threshold=1.0))
    assert len(thresholded.get_user("alice").rated_low) == 0
