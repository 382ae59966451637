"""The classic baselines (itemknn, ease, bpr, sequential): each one's expected signal on data where the
right answer is obvious, plus the exact formulas where they have one.

The conformance suite in test_models.py covers these models too once they are registered.
"""

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo
from lmrec.export.models.base import MODELS, make_model
from lmrec.export.models.bpr import BPRRecommender
from lmrec.export.models.ease import EASERecommender
from lmrec.export.models.itemknn import ItemKNNRecommender
from lmrec.export.models.sequential import SequentialRecommender

BASELINES = (ItemKNNRecommender, EASERecommender, BPRRecommender, SequentialRecommender)



def test_every_baseline_is_registered_under_its_name():
    assert all(MODELS.get(factory.name) is factory for factory in BASELINES)

N_ITEMS = 10
GROUP_A_ITEMS = np.arange(0, 5)
GROUP_B_ITEMS = np.arange(5, 10)
N_GROUP_USERS = 12  # users 0-5 like group A, 6-11 group B
COLD_USER = 12  # in the data set, no training interactions


def _dataset(n_users: int, interactions: Interactions, n_items: int = N_ITEMS) -> Dataset:
    return Dataset(
        name="baselines",
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(n_items)),
        items=tuple(ItemInfo(title=f"item {i}") for i in range(n_items)),
        users=tuple(UserInfo() for _ in range(n_users)),
        interactions=interactions,
    )


def _interactions(rows: list[tuple[int, int]]) -> Interactions:
    """Rows in the given order are chronological (timestamps count up)."""
    users, items = zip(*rows)
    return Interactions.from_lists(users, items, timestamp=np.arange(len(rows))).sorted()


def two_groups() -> tuple[Dataset, Interactions, np.ndarray]:
    """Two user groups with disjoint item groups; every user misses one item of their own group.

    Returns the data set, its training interactions and each group user's missing item.
    """
    rows, missing = [], []
    for user in range(N_GROUP_USERS):
        own = GROUP_A_ITEMS if user < 6 else GROUP_B_ITEMS
        skipped = own[user % 5]
        rows += [(user, item) for item in own if item != skipped]
        missing.append(skipped)
    train = _interactions(rows)
    return _dataset(COLD_USER + 1, train), train, np.array(missing)


def _histories(train: Interactions, users: np.ndarray) -> list[np.ndarray]:
    return [train.item[train.user == u] for u in users]


def _binary(train: Interactions, n_users: int, n_items: int) -> np.ndarray:
    matrix = np.zeros((n_users, n_items))
    matrix[train.user, train.item] = 1.0
    return matrix


# --- every baseline: the user's own group first ---------------------------------------------


@pytest.mark.parametrize("name", [factory.name for factory in BASELINES if factory.name != "sequential"])
def test_the_missing_own_group_item_outranks_the_other_group(name):
    dataset, train, missing = two_groups()
    params = {"factors": 8, "learning_rate": 0.05} if name == "bpr" else {}
    model = make_model(name, seed=0, **params).fit(dataset, train)
    users = np.arange(N_GROUP_USERS)

    scores = model.score(users, _histories(train, users))

    for user in users:
        other = GROUP_B_ITEMS if user < 6 else GROUP_A_ITEMS
        assert scores[user, missing[user]] > scores[user, other].max(), (name, user)


@pytest.mark.parametrize("name", [factory.name for factory in BASELINES])
def test_an_anonymous_history_is_scored_towards_its_group(name):
    dataset, train, _ = two_groups()
    params = {"factors": 8, "learning_rate": 0.05} if name == "bpr" else {}
    model = make_model(name, seed=0, **params).fit(dataset, train)

    # Item 7 appears after 5 and 6 in group-B users' sequences, so the sequential model likes it too.
    scores = model.score(np.array([-1, COLD_USER]), [np.array([5, 6]), np.array([0, 1])])

    assert scores[0, [7, 8, 9]].min() > scores[0, GROUP_A_ITEMS].max(), name
    assert scores[1, [2, 3, 4]].min() > scores[1, GROUP_B_ITEMS].max(), name


# --- itemknn --------------------------------------------------------------------------------


def test_itemknn_is_shrunk_cosine_with_the_top_neighbours_per_item():
    rng = np.random.default_rng(5)
    n_users, n_items = 30, 12
    rows = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.3]
    train = _interactions(rows)
    dataset = _dataset(n_users, train, n_items)
    shrink, neighbours = 2.0, 4
    model = ItemKNNRecommender(neighbours=neighbours, shrink=shrink).fit(dataset, train)

    X = _binary(train, n_users, n_items)
    co = X.T @ X
    n = np.diag(co)
    sim = co / (np.sqrt(np.outer(n, n)) + shrink)
    np.fill_diagonal(sim, 0.0)
    W = model.similarity.toarray()
    for j in range(n_items):
        kept = np.flatnonzero(W[:, j])
        assert len(kept) <= neighbours
        np.testing.assert_allclose(W[kept, j], sim[kept, j], rtol=1e-5)
        # Nothing dropped is more similar than anything kept.
        dropped = np.setdiff1d(np.arange(n_items), kept)
        assert sim[dropped, j].max(initial=0.0) <= W[kept, j].min() + 1e-6
    assert not np.diag(W).any()

    history = np.array([0, 3, 3, 7])  # a repeated item counts once
    np.testing.assert_allclose(model.score(np.array([-1]), [history])[0], W[[0, 3, 7]].sum(axis=0), rtol=1e-5)


# --- ease -----------------------------------------------------------------------------------


def test_ease_matches_the_closed_form_and_has_a_zero_diagonal():
    rng = np.random.default_rng(1)
    n_users, n_items, l2 = 20, 8, 3.0
    rows = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.4]
    train = _interactions(rows + [(0, 2)])  # a repeat counts once
    dataset = _dataset(n_users, train, n_items)
    model = EASERecommender(l2=l2).fit(dataset, train)

    X = _binary(train, n_users, n_items)
    P = np.linalg.inv(X.T @ X + l2 * np.eye(n_items))
    B = np.eye(n_items) - P / np.diag(P)[None, :]
    assert model.weights.dtype == np.float32
    np.testing.assert_allclose(model.weights, B, rtol=1e-5, atol=1e-6)
    assert not np.diag(model.weights).any()

    # Weights are the ridge regression of each item on the others: XᵀX B = XᵀX − λB off the diagonal.
    G = X.T @ X
    off = ~np.eye(n_items, dtype=bool)
    np.testing.assert_allclose((G @ B)[off], (G - l2 * B)[off], atol=1e-8)

    users = np.arange(n_users)
    np.testing.assert_allclose(model.score(users, _histories(train, users)), X @ B, rtol=1e-4, atol=1e-5)


def test_ease_in_float32_above_the_float64_size_agrees(monkeypatch):
    import lmrec.export.models.ease as ease_module

    rng = np.random.default_rng(2)
    n_users, n_items = 40, 30
    rows = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.3]
    train = _interactions(rows)
    dataset = _dataset(n_users, train, n_items)
    exact = EASERecommender(l2=10.0).fit(dataset, train).weights
    monkeypatch.setattr(ease_module, "FLOAT64_MAX_ITEMS", 10)
    single = EASERecommender(l2=10.0).fit(dataset, train).weights

    np.testing.assert_allclose(single, exact, atol=1e-5)


# --- bpr ------------------------------------------------------------------------------------


def test_bpr_is_reproducible_by_seed_and_zeroes_what_it_never_saw():
    dataset, train, _ = two_groups()
    train = train.select(train.item != 9)  # item 9 becomes a cold item
    users = np.arange(N_GROUP_USERS)
    histories = _histories(train, users)

    def fit(seed):
        return BPRRecommender(factors=8, seed=seed, iterations=30).fit(dataset, train)

    first, second, other = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(first.score(users, histories), second.score(users, histories))
    assert not np.array_equal(first.item_factors, other.item_factors)

    assert first.user_factors.shape == (dataset.n_users, 9) and first.user_factors.dtype == np.float32
    assert first.item_factors.shape == (N_ITEMS, 9) and first.item_factors.dtype == np.float32
    assert not first.user_factors[COLD_USER].any()
    assert not first.item_factors[9].any()
    np.testing.assert_array_equal(first.user_factors[users, -1], 1.0)  # the item-bias constant


def test_bpr_folds_in_the_mean_of_the_history_item_factors():
    dataset, train, _ = two_groups()
    model = BPRRecommender(factors=8, seed=0, iterations=30).fit(dataset, train)
    Q = model.item_factors

    vector = model.user_vector_from_items(np.array([5, 6, 6, 42]))  # repeats once; unknown items ignored
    expected = np.append(Q[[5, 6], :-1].mean(axis=0), 1.0)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    np.testing.assert_allclose(model.score(np.array([-1]), [np.array([5, 6])])[0], Q @ expected, rtol=1e-5, atol=1e-6)
    # A known user keeps the learnt factors whatever history comes with it.
    np.testing.assert_allclose(model.score(np.array([0]), [np.array([5])])[0], Q @ model.user_factors[0], rtol=1e-5)
    # An empty history ranks by item bias alone.
    np.testing.assert_allclose(model.score(np.array([-1]), [np.array([], np.int64)])[0], Q[:, -1], rtol=1e-6)


# --- sequential -----------------------------------------------------------------------------


def _chain_data(n_users: int = 6) -> tuple[Dataset, Interactions]:
    """Every user watches 0 → 1 → 2 → 3 in that order; users also see item 4 (popular) first."""
    rows = [(u, i) for u in range(n_users) for i in (4, 0, 1, 2, 3)]
    train = _interactions(rows)
    return _dataset(n_users, train, n_items=6), train


def test_sequential_predicts_the_next_item_of_a_chain():
    dataset, train = _chain_data()
    for params in SequentialRecommender.param_grid:
        model = SequentialRecommender(**params).fit(dataset, train)
        scores = model.score(np.array([-1, 0]), [np.array([0, 1]), np.array([4, 0])])
        assert np.argmax(np.where(np.isin(np.arange(6), [0, 1]), -np.inf, scores[0])) == 2, params
        assert np.argmax(np.where(np.isin(np.arange(6), [4, 0]), -np.inf, scores[1])) == 1, params


def test_sequential_uses_the_order_of_the_history():
    dataset, train = _chain_data()
    model = SequentialRecommender(window=1, last_items=1).fit(dataset, train)

    forward, backward = model.score(np.array([-1, -1]), [np.array([0, 1]), np.array([1, 0])])

    assert np.argmax(forward) == 2  # after 1 comes 2
    assert np.argmax(backward) == 1  # after 0 comes 1


def test_sequential_transitions_weigh_one_over_distance_and_recency():
    rows = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2)]
    train = _interactions(rows)
    dataset = _dataset(2, train, n_items=5)
    model = SequentialRecommender(window=2, last_items=2).fit(dataset, train)

    T = model.transitions.toarray()
    # From 0: user 0 gives 0→1 (1) and 0→2 (1/2); user 1 gives 0→2 (1).
    np.testing.assert_allclose(T[0], [0, 1, 1.5, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(T[1], [0, 0, 1, 0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(T[3], 0.0)  # never followed by anything

    scores = model.score(np.array([-1]), [np.array([3, 0, 1])])[0]  # last items 1 (weight 1), 0 (1/2)
    popularity = np.array([2, 1, 2, 1, 0]) / 2.0
    np.testing.assert_allclose(scores, T[1] + 0.5 * T[0] + 1e-3 * popularity, rtol=1e-5, atol=1e-8)


def test_sequential_falls_back_to_popularity_without_history():
    dataset, train = _chain_data()
    model = SequentialRecommender().fit(dataset, train)

    scores = model.score(np.array([-1]), [np.array([], np.int64)])[0]

    assert np.argmax(scores) == 0  # all of 0-4 equally popular: the lowest index wins ties in ranking
    assert scores[5] == 0.0 and (scores[:5] > 0).all()

