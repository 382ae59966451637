"""Splits: no target leaks into train, each protocol picks what design.md says, results are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo, concat, targets_by_user
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.splits import PROTOCOLS, split_dataset


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset(DataConfig(dataset="synthetic")).dataset


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> Dataset:
    return load_dataset(DataConfig(dataset="ml-100k", data_dir=ml100k_dir)).dataset


@pytest.fixture(params=["synthetic", "ml100k"])
def dataset(request) -> Dataset:
    return request.getfixturevalue(request.param)


def tiny_dataset(interactions: Interactions, n_items: int | None = None) -> Dataset:
    n_users = int(interactions.user.max()) + 1
    n_items = n_items or int(interactions.item.max()) + 1
    return Dataset(
        name="tiny",
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(n_items)),
        items=tuple(ItemInfo(title=f"item {i}") for i in range(n_items)),
        users=tuple(UserInfo() for _ in range(n_users)),
        interactions=interactions.sorted(),
    )


def pairs(interactions: Interactions) -> set[tuple[int, int]]:
    return set(zip(interactions.user.tolist(), interactions.item.tolist()))


def rows(interactions: Interactions) -> list[tuple]:
    cols = (interactions.user, interactions.item, interactions.weight, interactions.timestamp)
    return list(zip(*(c.tolist() for c in cols)))


def is_canonical(interactions: Interactions) -> bool:
    return rows(interactions) == rows(interactions.sorted())


# ---------------------------------------------------------------------------------------------------
# Every protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_target_leaks_into_train(dataset, protocol):
    split = split_dataset(dataset, protocol, seed=3)
    train = pairs(split.train)
    assert not train & pairs(split.valid)
    assert not train & pairs(split.test)
    assert not pairs(split.valid) & pairs(split.test)
    # Parts partition the data (cold-items may drop targets of users without training data).
    union = sorted(rows(split.train) + rows(split.valid) + rows(split.test))
    everything = rows(dataset.interactions)
    if protocol in ("cold-items", "sparse-users"):  # both leave some rows unused
        assert set(union) <= set(everything)
    else:
        assert union == sorted(everything)
    for part in (split.train, split.valid, split.test):
        assert len(part) > 0 and is_canonical(part)
    assert split.protocol == protocol and split.seed == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_evaluated_user_has_training_data(dataset, protocol):
    split = split_dataset(dataset, protocol)
    trained = set(split.train.user.tolist())
    assert set(split.valid.user.tolist()) <= trained and set(split.test.user.tolist()) <= trained


# ---------------------------------------------------------------------------------------------------
# temporal-loo


def test_temporal_loo_holds_out_the_last_two_by_time_then_item(ml100k):
    split = split_dataset(ml100k, "temporal-loo")
    by_user: dict[int, list[tuple[int, int]]] = {}
    it = ml100k.interactions
    for u, i, t in zip(it.user.tolist(), it.item.tolist(), it.timestamp.tolist()):
        by_user.setdefault(u, []).append((t, i))
    expected_test = {u: max(events)[1] for u, events in by_user.items()}
    expected_valid = {u: sorted(events)[-2][1] for u, events in by_user.items()}
    assert {u: int(i[0]) for u, i in targets_by_user(split.test).items()} == expected_test
    assert {u: int(i[0]) for u, i in targets_by_user(split.valid).items()} == expected_valid
    assert len(split.test) == len(split.valid) == 943


def test_temporal_loo_tie_rule_and_short_users():
    # user 0: items 5 and 2 at the same second, last -> item 5 (higher index) is test, 2 is valid.
    # user 1: only two interactions -> both train.
    interactions = Interactions.from_lists(
        user=[0, 0, 0, 0, 1, 1],
        item=[5, 2, 7, 1, 1, 2],
        timestamp=[30, 30, 10, 20, 5, 6],
    )
    split = split_dataset(tiny_dataset(interactions), "temporal-loo")
    assert pairs(split.test) == {(0, 5)}
    assert pairs(split.valid) == {(0, 2)}
    assert pairs(split.train) == {(0, 7), (0, 1), (1, 1), (1, 2)}


def test_temporal_loo_matches_the_calibration_point(ml100k):
    """design.md: popularity's Recall@10 on ml-100k temporal-loo is 0.0498 (full ranking, seen items excluded)."""
    split = split_dataset(ml100k, "temporal-loo")
    seen = concat(split.train, split.valid)
    popularity = np.bincount(seen.item, minlength=ml100k.n_items).astype(np.float64)
    seen_by_user = targets_by_user(seen)
    hits = 0
    for user, targets in targets_by_user(split.test).items():
        scores = popularity.copy()
        scores[seen_by_user[user]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:10]
        hits += len(np.intersect1d(top, targets))
    assert round(hits / len(split.test), 4) == 0.0498


# ---------------------------------------------------------------------------------------------------
# random-811


def test_random_811_sizes_per_user(dataset):
    split = split_dataset(dataset, "random-811", seed=11)
    n = np.bincount(dataset.interactions.user, minlength=dataset.n_users)
    n_valid = np.bincount(split.valid.user, minlength=dataset.n_users)
    n_test = np.bincount(split.test.user, minlength=dataset.n_users)
    held_out = np.where(n >= 3, np.maximum(n // 10, 1), 0)
    assert (n_valid == held_out).all() and (n_test == held_out).all()
    share_train = len(split.train) / len(dataset.interactions)
    assert 0.78 < share_train < 0.86


def test_random_811_short_users_stay_in_train():
    interactions = Interactions.from_lists(user=[0, 0, 1, 1, 1, 2], item=[0, 1, 0, 1, 2, 2])
    split = split_dataset(tiny_dataset(interactions), "random-811")
    assert set(split.train.user.tolist()) == {0, 1, 2}
    assert set(split.valid.user.tolist()) == set(split.test.user.tolist()) == {1}
    assert len(split.train) == 4


def test_random_811_is_deterministic_by_seed(synthetic):
    a = split_dataset(synthetic, "random-811", seed=5)
    b = split_dataset(synthetic, "random-811", seed=5)
    c = split_dataset(synthetic, "random-811", seed=6)
    assert rows(a.test) == rows(b.test) and rows(a.valid) == rows(b.valid)
    assert rows(a.test) != rows(c.test)


def test_random_811_is_not_chronological(synthetic):
    # Held-out items are a random sample, not the latest ones: about a tenth of test items are a
    # user's last interaction (far from all of them, as in temporal-loo).
    split = split_dataset(synthetic, "random-811")
    last = {u: h[-1] for u, h in enumerate(synthetic.histories())}
    share_last = np.mean([last[u] == i for u, i in zip(split.test.user.tolist(), split.test.item.tolist())])
    assert share_last < 0.3


# ---------------------------------------------------------------------------------------------------
# cold-items


def test_cold_items_have_no_training_interaction(dataset):
    split = split_dataset(dataset, "cold-items", seed=2, cold_item_share=0.1)
    interacted = np.unique(dataset.interactions.item)
    assert len(split.cold_items) == round(0.1 * len(interacted))
    assert set(split.cold_items.tolist()) <= set(interacted.tolist())
    assert not np.isin(split.train.item, split.cold_items).any()
    # Every cold item shows up in exactly one of valid/test, and only there.
    cold_in_valid = set(split.valid.item.tolist()) & set(split.cold_items.tolist())
    cold_in_test = set(split.test.item.tolist()) & set(split.cold_items.tolist())
    assert not cold_in_valid & cold_in_test
    assert abs(len(cold_in_valid) - len(cold_in_test)) <= max(2, 0.2 * len(split.cold_items))
    # Warm items are still evaluated too.
    assert not np.isin(split.test.item, split.cold_items).all()


def test_cold_items_keeps_every_cold_interaction_of_trained_users(synthetic):
    split = split_dataset(synthetic, "cold-items", seed=9, cold_item_share=0.2)
    it = synthetic.interactions
    on_cold = np.isin(it.item, split.cold_items)
    trained = np.isin(it.user, split.train.user)
    expected = pairs(it.select(on_cold & trained))
    held_out = concat(split.valid, split.test)
    assert pairs(held_out.select(np.isin(held_out.item, split.cold_items))) == expected


def test_cold_items_drops_targets_of_users_without_training_data():
    # user 1 only ever touched item 3; if item 3 is cold, user 1 has nothing to learn from.
    users = [0] * 10 + [1] + [2] * 10
    items = list(range(10)) + [3] + list(range(10))
    dataset = tiny_dataset(Interactions.from_lists(user=users, item=items))
    for seed in range(40):
        split = split_dataset(dataset, "cold-items", seed=seed, cold_item_share=0.2)
        if 3 in split.cold_items.tolist():
            break
    else:
        pytest.fail("no seed made item 3 cold")
    assert 1 not in set(np.concatenate([split.train.user, split.valid.user, split.test.user]).tolist())


def test_cold_items_is_deterministic_by_seed(synthetic):
    a = split_dataset(synthetic, "cold-items", seed=4)
    b = split_dataset(synthetic, "cold-items", seed=4)
    c = split_dataset(synthetic, "cold-items", seed=8)
    assert a.cold_items.tolist() == b.cold_items.tolist() and rows(a.test) == rows(b.test)
    assert a.cold_items.tolist() != c.cold_items.tolist()


# ---------------------------------------------------------------------------------------------------
# Errors


# ---------------------------------------------------------------------------------------------------
# sparse-users


def test_sparse_users_are_known_by_their_first_interactions_then_tested_on_the_next(dataset):
    split = split_dataset(dataset, "sparse-users", seed=5, sparse_user_share=0.25, sparse_known=3)
    tested = np.unique(split.test.user)
    eligible = [u for u, h in enumerate(dataset.histories()) if len(h) >= 5]
    assert len(tested) == max(1, round(0.25 * len(eligible))) and set(tested.tolist()) <= set(eligible)
    assert set(split.valid.user.tolist()) == set(tested.tolist())  # one valid and one test row each
    assert len(split.valid) == len(split.test) == len(tested)
    histories = dataset.histories()  # canonical order: by time, then item index
    train = targets_by_user(split.train)
    valid, test = targets_by_user(split.valid), targets_by_user(split.test)
    for user in tested.tolist():
        assert sorted(train[user]) == sorted(histories[user][:3].tolist())
        assert valid[user].tolist() == [histories[user][3]] and test[user].tolist() == [histories[user][4]]
    # Everyone else is training data, whole.
    others = [u for u in range(len(histories)) if u not in set(tested.tolist()) and len(histories[u])]
    assert all(len(train[u]) == len(histories[u]) for u in others)


def test_sparse_users_is_deterministic_by_seed_and_checks_its_settings(synthetic):
    first, again = split_dataset(synthetic, "sparse-users", seed=1), split_dataset(synthetic, "sparse-users", seed=1)
    other = split_dataset(synthetic, "sparse-users", seed=2)
    assert rows(first.test) == rows(again.test) and rows(first.test) != rows(other.test)
    with pytest.raises(ValueError, match="sparse_user_share must be in"):
        split_dataset(synthetic, "sparse-users", sparse_user_share=1.0)
    with pytest.raises(ValueError, match="sparse_known must be at least 1"):
        split_dataset(synthetic, "sparse-users", sparse_known=0)
    short_users = tiny_dataset(Interactions.from_lists(user=[0, 0, 0, 0, 1, 1], item=[0, 1, 2, 3, 1, 2]))
    with pytest.raises(ValueError, match="empty valid set .users need at least 5 interactions"):
        split_dataset(short_users, "sparse-users")


def test_unknown_protocol(synthetic):
    with pytest.raises(ValueError, match="unknown split protocol 'leave-one-out'"):
        split_dataset(synthetic, "leave-one-out")  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_share_outside_open_unit_interval(synthetic, share):
    with pytest.raises(ValueError, match="cold_item_share must be in"):
        split_dataset(synthetic, "cold-items", cold_item_share=share)


def test_empty_result_is_an_error():
    short_users = tiny_dataset(Interactions.from_lists(user=[0, 0, 1, 1], item=[0, 1, 1, 2]))
    with pytest.raises(ValueError, match="empty valid set"):
        split_dataset(short_users, "temporal-loo")
    with pytest.raises(ValueError, match="need at least 2"):
        split_dataset(short_users, "cold-items", cold_item_share=0.1)
