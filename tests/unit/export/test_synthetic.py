"""The synthetic default data set: deterministic, the promised shape, and every signal informative."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, targets_by_user
from lmrec.export.loaders import DataConfig, SyntheticConfig, load_dataset
from lmrec.export.loaders.synthetic import generate_synthetic
from lmrec.export.splits import split_dataset


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset(DataConfig(dataset="synthetic")).dataset


def test_same_seed_same_data_other_seed_other_data():
    small = SyntheticConfig(n_users=40, n_items=80)
    a, b = generate_synthetic(small), generate_synthetic(small)
    c = generate_synthetic(SyntheticConfig(n_users=40, n_items=80, seed=8))
    for column in ("user_id", "item_id", "rating", "timestamp"):
        assert np.array_equal(getattr(a.interactions, column), getattr(b.interactions, column))
    assert a.items == b.items and a.users == b.users
    assert not np.array_equal(a.interactions.item_id, c.interactions.item_id)


def test_shape_of_the_default_data_set(synthetic):
    assert (synthetic.n_users, synthetic.n_items) == (300, 400)
    per_user = np.bincount(synthetic.interactions.user)
    assert per_user.min() >= 15 and per_user.max() <= 60
    assert set(np.unique(synthetic.interactions.weight).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(synthetic.interactions.weight)) == 5
    titles = [item.title for item in synthetic.items]
    assert len(set(titles)) == len(titles)
    assert all(1 <= len(item.categories) <= 2 and item.description and item.year for item in synthetic.items)
    assert len({c for item in synthetic.items for c in item.categories}) == 8
    assert all(set(u.attributes) == {"age", "gender", "occupation"} for u in synthetic.users)


def test_timestamps_strictly_increase_per_user(synthetic):
    it = synthetic.interactions
    same_user = it.user[1:] == it.user[:-1]
    assert (np.diff(it.timestamp)[same_user] > 0).all()


def test_no_repeated_item_per_user(synthetic):
    it = synthetic.interactions
    assert len(set(zip(it.user.tolist(), it.item.tolist()))) == len(it)


def shuffled_histories(histories: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(h) for h in histories]


def test_users_concentrate_on_few_categories(synthetic):
    primary = np.array([item.categories[0] for item in synthetic.items])
    top_share = [Counter(primary[h]).most_common(1)[0][1] / len(h) for h in synthetic.histories()]
    # Random picks among 8 categories would put ~1/8 to ~1/4 in the largest one.
    assert np.mean(top_share) > 0.45


def test_ratings_are_higher_in_a_users_main_categories(synthetic):
    # Categories that make up under a tenth of a user's history are the noise picks, rated lower.
    primary = np.array([item.categories[0] for item in synthetic.items])
    it = synthetic.interactions
    share = {}
    for u, history in enumerate(synthetic.histories()):
        share.update({(u, c): n / len(history) for c, n in Counter(primary[history]).items()})
    share_of_row = np.array([share[u, primary[i]] for u, i in zip(it.user.tolist(), it.item.tolist())])
    rare = share_of_row < 0.1
    assert rare.sum() > 0.03 * len(it)
    assert it.weight[~rare].mean() > it.weight[rare].mean() + 1.0


def test_series_make_the_order_informative(synthetic):
    """The most frequent successor of an item explains many more transitions than in shuffled histories."""

    def top_successor_share(histories):
        transitions = Counter((int(a), int(b)) for h in histories for a, b in zip(h[:-1], h[1:]))
        best: dict[int, int] = {}
        for (a, _), count in transitions.items():
            best[a] = max(best.get(a, 0), count)
        return sum(best.values()) / sum(transitions.values())

    real = top_successor_share(synthetic.histories())
    shuffled = top_successor_share(shuffled_histories(synthetic.histories()))
    assert real > 2 * shuffled


STOP_WORDS = {"the", "a", "and", "about", "it", "of"}


def words_of(item) -> set[str]:
    return set(re.findall(r"[a-z]+", f"{item.title} {item.description}".lower())) - STOP_WORDS


def hit_rate(scores: np.ndarray, split) -> float:
    train_by_user = targets_by_user(split.train)
    hits = []
    for user, targets in targets_by_user(split.test).items():
        s = scores[user].copy()
        s[train_by_user[user]] = -np.inf
        hits.append(np.isin(np.argsort(-s, kind="stable")[:10], targets).any())
    return float(np.mean(hits))


def test_text_and_cooccurrence_each_beat_popularity(synthetic):
    split = split_dataset(synthetic, "temporal-loo")
    n_users, n_items = synthetic.n_users, synthetic.n_items
    seen = np.zeros((n_users, n_items))
    seen[split.train.user, split.train.item] = 1.0

    vocabulary = sorted(set().union(*(words_of(item) for item in synthetic.items)))
    column = {w: k for k, w in enumerate(vocabulary)}
    bag = np.zeros((n_items, len(vocabulary)))
    for i, item in enumerate(synthetic.items):
        bag[i, [column[w] for w in words_of(item)]] = 1.0
    bag /= np.linalg.norm(bag, axis=1, keepdims=True)
    text_scores = seen @ (bag @ bag.T)

    cooccurrence = seen.T @ seen
    np.fill_diagonal(cooccurrence, 0.0)
    cooccurrence_scores = seen @ cooccurrence

    popularity_scores = np.tile(seen.sum(axis=0), (n_users, 1))
    popularity = hit_rate(popularity_scores, split)
    assert hit_rate(text_scores, split) > popularity + 0.1
    assert hit_rate(cooccurrence_scores, split) > popularity + 0.1


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="n_categories"):
        generate_synthetic(SyntheticConfig(n_categories=9))
    with pytest.raises(ValueError, match="min_interactions"):
        generate_synthetic(SyntheticConfig(n_items=20, n_categories=2, min_interactions=30, max_interactions=40))
