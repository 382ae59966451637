"""One conformance suite for every registered recommender, plus each built-in's expected signal."""

import numpy as np
import pytest

from lmrec.cli_types import MAX_SEED
from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo, concat
from lmrec.export.models.base import MODELS, Recommender, make_model, model_param_grid

N_ITEMS = 10
GROUP_A_ITEMS = np.arange(0, 5)
GROUP_B_ITEMS = np.arange(5, 10)
N_GROUP_USERS = 12  # users 0-5 like group A, 6-11 group B
COLD_USER = 12  # in the data set, no training interactions


def _dataset(name: str, n_users: int, interactions: Interactions) -> Dataset:
    return Dataset(
        name=name,
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(N_ITEMS)),
        items=tuple(ItemInfo(title=f"item {i}") for i in range(N_ITEMS)),
        users=tuple(UserInfo() for _ in range(n_users)),
        interactions=interactions,
    )


def two_groups(held_out_from_other_group: bool = False) -> tuple[Dataset, Interactions, Interactions]:
    """Two user groups with disjoint item groups; each user's last interaction is held out.

    Every user sees four of their group's five items in training. The held-out item is the user's
    fifth group item, or (when asked) an item of the other group, so two such data sets differ only
    in what a model must never learn from.
    """
    train_rows, test_rows = [], []
    for user in range(N_GROUP_USERS):
        own, other = (GROUP_A_ITEMS, GROUP_B_ITEMS) if user < 6 else (GROUP_B_ITEMS, GROUP_A_ITEMS)
        skipped = own[user % 5]
        train_rows += [(user, item) for item in own if item != skipped]
        test_rows.append((user, other[user % 5] if held_out_from_other_group else skipped))
    train = _interactions(train_rows, start_time=0)
    test = _interactions(test_rows, start_time=1000)
    return _dataset("two-groups", COLD_USER + 1, concat(train, test)), train, test


def _interactions(rows: list[tuple[int, int]], start_time: int) -> Interactions:
    users, items = zip(*rows)
    return Interactions.from_lists(users, items, timestamp=start_time + np.arange(len(rows))).sorted()


def _train_histories(train: Interactions, users: np.ndarray) -> list[np.ndarray]:
    return [train.item[train.user == u] for u in users]


# Expensive methods get a tiny configuration here: the suite checks the interface, not the quality.
_TINY_FINETUNE = {"steps": 2, "batch_size": 4, "max_pairs_per_user": 3}
CONFORMANCE_PARAMS = {
    "lm-finetuned": _TINY_FINETUNE,
    "fused": {"lm_params": _TINY_FINETUNE, "candidates": 5, "ranker": {"epochs": 3}},
    "fused-int8": {"lm_params": _TINY_FINETUNE, "candidates": 5, "ranker": {"epochs": 3}},
}


def _fit(name: str, dataset: Dataset, train: Interactions, seed: int = 7) -> Recommender:
    return make_model(name, seed=seed, **CONFORMANCE_PARAMS.get(name, {})).fit(dataset, train)


MODEL_NAMES = sorted(MODELS)


# --- conformance: every registered model ------------------------------------------------------


def test_the_built_in_models_are_registered():
    assert {"pop", "als", "itemknn", "bpr", "ease", "sequential", "lm-pretrained", "lm-finetuned"} <= set(MODELS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_factory_builds_every_grid_entry(name):
    grid = model_param_grid(name)
    assert grid and all(isinstance(params, dict) for params in grid)
    for params in grid:
        model = make_model(name, seed=0, **params)
        assert model.name == name
        assert isinstance(model, Recommender)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scores_have_one_finite_float32_row_per_user(name):
    dataset, train, _ = two_groups()
    model = _fit(name, dataset, train)
    users = np.array([0, 7, 3])

    scores = model.score(users, _train_histories(train, users))

    assert scores.shape == (3, N_ITEMS)
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_largest_allowed_seed_fits(name):
    """The CLI and `check_settings` allow seeds up to MAX_SEED; every model must take them (implicit's
    ALS and BPR seed numpy's 32-bit legacy generator)."""
    dataset, train, _ = two_groups()
    scores = _fit(name, dataset, train, seed=MAX_SEED).score(np.arange(2), _train_histories(train, np.arange(2)))
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_scores(name):
    dataset, train, _ = two_groups()
    users = np.arange(N_GROUP_USERS)
    histories = _train_histories(train, users)

    first = _fit(name, dataset, train, seed=3).score(users, histories)
    second = _fit(name, dataset, train, seed=3).score(users, histories)

    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_never_learns_from_held_out_interactions_in_the_dataset(name):
    # The two data sets differ only in the held-out interactions; fitting on the same train set
    # must give the same model, so nothing leaks from `dataset.interactions`.
    dataset, train, _ = two_groups(held_out_from_other_group=False)
    other_dataset, other_train, _ = two_groups(held_out_from_other_group=True)
    users = np.arange(N_GROUP_USERS)
    histories = _train_histories(train, users)

    scores = _fit(name, dataset, train).score(users, histories)
    other_scores = _fit(name, other_dataset, other_train).score(users, histories)

    np.testing.assert_array_equal(scores, other_scores)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_batch_scores_like_its_users_one_by_one(name):
    dataset, train, _ = two_groups()
    model = _fit(name, dataset, train)
    users = np.array([1, 8, 10])
    histories = _train_histories(train, users)

    batch = model.score(users, histories)
    singles = np.vstack([model.score(users[j : j + 1], histories[j : j + 1]) for j in range(3)])

    # Dynamic int8 quantises activations with one scale per tensor, i.e. per batch: an int8 encoder's
    # output depends slightly on what it is batched with. Only that drift is allowed, and only there.
    atol = 1e-2 if name.endswith("int8") else 1e-6
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_users_without_training_data_are_scored_from_their_history(name):
    dataset, train, _ = two_groups()
    model = _fit(name, dataset, train)
    history = np.array([5, 6, 7])

    for user in (COLD_USER, -1):  # in the data set but never trained on; anonymous session
        scores = model.score(np.array([user]), [history])
        assert scores.shape == (1, N_ITEMS) and np.isfinite(scores).all()


# --- each built-in's expected signal ------------------------------------------------------------


def test_popularity_ranks_items_by_training_count():
    interactions = Interactions.from_lists(
        user=[0, 0, 0, 1, 1, 2, 2, 2, 3],
        item=[4, 2, 7, 4, 2, 4, 9, 7, 4],
    ).sorted()
    dataset = _dataset("pop", 4, interactions)
    model = make_model("pop", seed=0).fit(dataset, interactions)

    scores = model.score(np.array([0, 3]), [np.array([4]), np.array([])])

    expected_counts = np.bincount(interactions.item, minlength=N_ITEMS)
    np.testing.assert_array_equal(scores, np.tile(expected_counts, (2, 1)))
    assert np.argmax(scores[0]) == 4  # 4 interactions, the most popular


def test_als_ranks_the_users_own_group_above_the_other():
    dataset, train, test = two_groups()
    model = _fit("als", dataset, train)
    users = np.arange(N_GROUP_USERS)

    scores = model.score(users, _train_histories(train, users))

    for user in users:
        own, other = (GROUP_A_ITEMS, GROUP_B_ITEMS) if user < 6 else (GROUP_B_ITEMS, GROUP_A_ITEMS)
        held_out = test.item[test.user == user][0]
        assert scores[user, held_out] > scores[user, other].max(), user
        assert scores[user, own].mean() > scores[user, other].mean(), user


def test_als_folds_in_an_anonymous_history():
    dataset, train, _ = two_groups()
    model = _fit("als", dataset, train)

    scores = model.score(np.array([-1, COLD_USER]), [np.array([5, 6]), np.array([0, 1])])

    assert scores[0, GROUP_B_ITEMS].min() > scores[0, GROUP_A_ITEMS].max()
    assert scores[1, GROUP_A_ITEMS].min() > scores[1, GROUP_B_ITEMS].max()
    np.testing.assert_allclose(
        scores[0], model.item_factors @ model.user_vector_from_items(np.array([5, 6])), rtol=1e-5, atol=1e-6
    )


def test_als_fold_in_is_the_least_squares_user_step_with_confidence_one_plus_alpha():
    dataset, train, _ = two_groups()
    alpha, regularization = 4.0, 0.1
    model = make_model("als", seed=0, alpha=alpha, regularization=regularization, factors=8).fit(dataset, train)
    items = np.array([0, 2, 3])
    Y = model.item_factors.astype(np.float64)
    Yh = Y[items]

    # Hu et al.: x = (YᵀY + Yᵀ(C - I)Y + λI)⁻¹ YᵀCp with C = 1 + alpha on the user's items.
    A = Y.T @ Y + alpha * Yh.T @ Yh + regularization * np.eye(8)
    b = (1 + alpha) * Yh.sum(axis=0)
    expected = np.linalg.solve(A, b)

    np.testing.assert_allclose(model.user_vector_from_items(items), expected, rtol=1e-3, atol=1e-5)


def test_als_folds_in_one_user_on_one_thread_and_many_on_the_fitted_count_with_the_same_vectors(monkeypatch):
    from lmrec.export.models.als import PARALLEL_FOLD_IN_USERS

    dataset, train, _ = two_groups()
    model = make_model("als", seed=0, factors=8, num_threads=2).fit(dataset, train)
    solver = model._als
    used = []
    recalculate = solver.recalculate_user
    monkeypatch.setattr(solver, "recalculate_user", lambda *a: (used.append(solver.num_threads), recalculate(*a))[1])
    rng = np.random.default_rng(0)
    histories = [rng.choice(N_ITEMS, size=3, replace=False) for _ in range(PARALLEL_FOLD_IN_USERS)]
    together = model._fold_in(histories)
    alone = model.user_vector_from_items(histories[0])
    assert used == [2, 1] and solver.num_threads == 2  # restored after the call
    np.testing.assert_array_equal(alone, together[0])


def test_als_exposes_float32_factors_and_zero_for_what_it_never_saw():
    dataset, train, _ = two_groups()
    train = train.select(train.item != 9)  # item 9 becomes a cold item
    model = make_model("als", seed=0, factors=16).fit(dataset, train)
    assert model.user_factors.shape == (dataset.n_users, 16) and model.user_factors.dtype == np.float32
    assert model.item_factors.shape == (N_ITEMS, 16) and model.item_factors.dtype == np.float32
    assert not model.user_factors[COLD_USER].any()  # no data, no made-up preference
    assert not model.item_factors[9].any()
    assert model.item_factors[:9].any(axis=1).all()


def test_unknown_model_names_are_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        make_model("no-such-model")


@pytest.mark.parametrize("method, params, message", [
    ("als", {"factors": 2.5}, "als.factors=2.5: needs a whole number"),
    ("ease", {"l2": "abc"}, "ease.l2='abc': needs a finite number"),
    ("ease", {"l2": float("inf")}, "needs a finite number"),
    ("ease", {"l2": True}, "needs a finite number"),
    ("fused", {"holdot": "last"}, "fused has no setting 'holdot' (its settings: candidates, cold_share, holdout"),
    ("fused", {"new_item_ranks": "yes"}, "needs true or false"),
    ("lm-finetuned", {"steps": "abc"}, "lm-finetuned.steps='abc': needs a whole number"),
    ("lm-finetuned", {"stepz": 3}, "lm-finetuned has no setting 'stepz'"),
])
def test_settings_of_the_wrong_kind_are_refused_before_any_fit(method, params, message):
    """Such values used to fail deep inside a fit, as a traceback (a review of the CLI)."""
    from lmrec.export.models.base import check_settings

    with pytest.raises(ValueError) as refused:
        check_settings(method, params)
    assert message in str(refused.value)


def test_settings_of_the_right_kind_pass():
    from lmrec.export.models.base import check_settings

    check_settings("ease", {"l2": 250})  # an int where a float is expected is fine
    check_settings("fused", {"new_item_ranks": True, "signals": {"ease": {"l2": 1.0}}, "lm_params": {"steps": 3}})
    check_settings("lm-finetuned", {"steps": 3, "learning_rate": 1e-4})
