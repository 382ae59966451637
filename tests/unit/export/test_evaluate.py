import json
from dataclasses import replace
from typing import Any, ClassVar, Sequence

import numpy as np
import pytest

import lmrec.export.evaluate as evaluate
from lmrec.export.dataset import Dataset, Interactions, ItemInfo, Split, UserInfo, concat, histories_of
from lmrec.export.evaluate import EvaluateConfig, format_table, records_to_json, run_evaluation
from lmrec.export.models.base import MODELS

N_USERS, N_ITEMS = 12, 12
GROUP_A_ITEMS, GROUP_B_ITEMS = np.arange(0, 6), np.arange(6, 12)
METRIC_KEYS = {f"{name}@{k}" for k in (2, 4) for name in ("recall", "ndcg", "precision", "f1", "hit", "mrr", "coverage")}


def _own_and_other(user: int) -> tuple[np.ndarray, np.ndarray]:
    return (GROUP_A_ITEMS, GROUP_B_ITEMS) if user < N_USERS // 2 else (GROUP_B_ITEMS, GROUP_A_ITEMS)


def two_group_split(test_from_other_group: bool = False) -> tuple[Dataset, Split]:
    """Users 0-5 use items 0-5, users 6-11 items 6-11; per user, chronological leave-one-out:
    three train items, then one valid, then one test item (from the own group unless asked)."""
    rows = []
    for user in range(N_USERS):
        own, other = _own_and_other(user)
        sequence = list(np.roll(own, -user)[:5])
        if test_from_other_group:
            sequence[-1] = other[user % 6]
        rows += [(user, item, position) for position, item in enumerate(sequence)]
    users, items, times = map(np.array, zip(*rows))
    interactions = Interactions.from_lists(users, items, timestamp=times).sorted()
    position = interactions.timestamp  # 0..4 within every user
    split = Split(
        protocol="temporal-loo",
        seed=42,
        train=interactions.select(position <= 2),
        valid=interactions.select(position == 3),
        test=interactions.select(position == 4),
    )
    dataset = Dataset(
        name="two-groups",
        user_ids=tuple(f"u{u}" for u in range(N_USERS)),
        item_ids=tuple(f"i{i}" for i in range(N_ITEMS)),
        items=tuple(ItemInfo(title=f"item {i}") for i in range(N_ITEMS)),
        users=tuple(UserInfo() for _ in range(N_USERS)),
        interactions=interactions,
    )
    return dataset, split


def _config(methods: tuple[str, ...], **overrides: Any) -> EvaluateConfig:
    return EvaluateConfig(data=None, protocol="temporal-loo", methods=methods, ks=(2, 4), tune_metric="ndcg@2", **overrides)


class HistoryLover:
    """Scores the user's known items highest: only the harness's exclusion keeps them out of the lists.

    `side` chooses what comes next: "own" group items (a good model here) or the "other" group's.
    Records every interaction set it was fit on.
    """

    name = "history-lover"
    param_grid: ClassVar[list[dict[str, Any]]] = [{"side": "other"}, {"side": "own"}]
    fitted_on: ClassVar[list[Interactions]] = []

    def __init__(self, *, side: str = "own", seed: int = 42) -> None:
        self.side = side

    def fit(self, dataset: Dataset, train: Interactions) -> "HistoryLover":
        HistoryLover.fitted_on.append(train)
        self.histories = histories_of(train, dataset.n_users)
        return self

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        scores = np.zeros((len(users), N_ITEMS), np.float32)
        for row, user in enumerate(users):
            own, other = _own_and_other(int(user))
            scores[row, own if self.side == "own" else other] = 1.0
            scores[row, histories[row]] = 10.0
        return scores


@pytest.fixture
def history_lover(monkeypatch):
    monkeypatch.setitem(MODELS, HistoryLover.name, HistoryLover)
    monkeypatch.setattr(HistoryLover, "fitted_on", [])
    return HistoryLover


@pytest.fixture
def ranked_lists(monkeypatch):
    """Every (top_items, targets) pair the harness measures, in call order."""
    calls: list[tuple[np.ndarray, list[np.ndarray]]] = []
    measure = evaluate.compute_metrics

    def spy(top_items, targets, **kwargs):
        calls.append((top_items.copy(), list(targets)))
        return measure(top_items, targets, **kwargs)

    monkeypatch.setattr(evaluate, "compute_metrics", spy)
    return calls


def test_known_items_never_appear_in_the_ranked_lists(history_lover, ranked_lists):
    dataset, split = two_group_split()
    run_evaluation(_config(("history-lover",)), dataset=dataset, split=split, progress=lambda line: None)

    *valid_calls, test_call = ranked_lists
    assert len(valid_calls) == len(HistoryLover.param_grid)
    train_histories = histories_of(split.train, N_USERS)
    train_valid_histories = histories_of(concat(split.train, split.valid), N_USERS)
    for top, _ in valid_calls:
        for user in range(N_USERS):
            assert not np.isin(top[user], train_histories[user]).any()
    top, _ = test_call
    for user in range(N_USERS):
        assert not np.isin(top[user], train_valid_histories[user]).any()
    assert top.shape == (N_USERS, 4)


def test_tuning_fits_on_train_and_the_final_fit_on_train_plus_valid(history_lover):
    dataset, split = two_group_split()
    [record] = run_evaluation(_config(("history-lover",)), dataset=dataset, split=split, progress=lambda line: None)

    *tuning_fits, final_fit = HistoryLover.fitted_on
    test_pairs = set(zip(split.test.user.tolist(), split.test.item.tolist()))
    for fitted in tuning_fits:
        np.testing.assert_array_equal(fitted.item, split.train.item)
        np.testing.assert_array_equal(fitted.user, split.train.user)
    expected_final = concat(split.train, split.valid)
    np.testing.assert_array_equal(final_fit.item, expected_final.item)
    for fitted in HistoryLover.fitted_on:
        assert not test_pairs & set(zip(fitted.user.tolist(), fitted.item.tolist()))

    assert record.params == {"side": "own"}  # the better one on validation
    assert record.valid_metrics["ndcg@2"] > 0
    assert record.metrics["hit@4"] == 1.0  # the own-group test item is in the top 4


def test_chosen_params_depend_on_validation_only():
    # On the second split every test item comes from the other group: a leak from test into
    # tuning would show up as different choices or validation figures.
    config = _config(("als",))
    dataset, split = two_group_split()
    other_dataset, other_split = two_group_split(test_from_other_group=True)

    [record] = run_evaluation(config, dataset=dataset, split=split, progress=lambda line: None)
    [other] = run_evaluation(config, dataset=other_dataset, split=other_split, progress=lambda line: None)

    assert record.params == other.params
    assert record.valid_metrics == other.valid_metrics
    assert record.metrics != other.metrics


def test_fixed_params_skip_tuning(history_lover):
    dataset, split = two_group_split()
    lines: list[str] = []
    config = _config(("history-lover",), model_params={"history-lover": {"side": "other"}})

    [record] = run_evaluation(config, dataset=dataset, split=split, progress=lines.append)

    assert record.params == {"side": "other"}
    assert record.valid_metrics == {}
    assert len(HistoryLover.fitted_on) == 1
    assert not any("valid" in line for line in lines[1:])


def test_scoring_in_batches_gives_the_same_figures(monkeypatch):
    dataset, split = two_group_split()
    config = _config(("pop", "als"))
    whole = run_evaluation(config, dataset=dataset, split=split, progress=lambda line: None)
    monkeypatch.setattr(evaluate, "SCORE_BATCH_SIZE", 5)
    batched = run_evaluation(config, dataset=dataset, split=split, progress=lambda line: None)

    for a, b in zip(whole, batched):
        assert a.params == b.params
        assert a.metrics == pytest.approx(b.metrics)


def test_popularity_figures_by_hand():
    # The reference ranks each user's unseen items by train+valid count, lower index first on ties.
    dataset, split = two_group_split()
    [record] = run_evaluation(_config(("pop",)), dataset=dataset, split=split, progress=lambda line: None)

    counts = np.bincount(concat(split.train, split.valid).item, minlength=N_ITEMS).astype(float)
    known = histories_of(concat(split.train, split.valid), N_USERS)
    hits = 0
    for user in range(N_USERS):
        candidates = np.setdiff1d(np.arange(N_ITEMS), known[user])
        ranked = candidates[np.lexsort((candidates, -counts[candidates]))][:2]
        hits += int(split.test.item[split.test.user == user][0] in ranked)
    assert record.metrics["recall@2"] == pytest.approx(hits / N_USERS)
    assert record.n_test_users == N_USERS


def test_json_and_table_name_every_method():
    dataset, split = two_group_split()
    lines: list[str] = []
    records = run_evaluation(_config(("pop", "als")), dataset=dataset, split=split, progress=lines.append)

    payload = records_to_json(records, command="lmrec evaluate --dataset two-groups")
    json.dumps(payload)  # plain JSON types only
    assert payload["command"] == "lmrec evaluate --dataset two-groups"
    assert [r["method"] for r in payload["records"]] == ["pop", "als"]
    for entry in payload["records"]:
        assert {"dataset", "protocol", "seed", "method", "params", "metrics", "valid_metrics"} <= entry.keys()
        assert (entry["dataset"], entry["protocol"], entry["seed"]) == ("two-groups", "temporal-loo", 42)
        assert set(entry["metrics"]) == METRIC_KEYS

    table = format_table(records)
    rows = table.splitlines()
    assert "two-groups" in rows[0] and "temporal-loo" in rows[0] and "seed 42" in rows[0]
    for column in ("recall@2", "ndcg@2", "precision@2", "f1@2", "hit@2", "mrr@2", "recall@4", "mrr@4", "coverage@2"):
        assert column in rows[1]
    assert rows[2].startswith("pop") and rows[3].startswith("als")
    assert f"{records[0].metrics['recall@2']:.4f}" in rows[2]
    assert len(lines) >= 1 + 1 + len(MODELS["als"].param_grid) + 1  # header, pop, als tuning + final


def test_a_split_made_for_another_protocol_or_seed_is_refused():
    dataset, split = two_group_split()
    with pytest.raises(ValueError, match="split is"):
        run_evaluation(_config(("pop",), seed=7), dataset=dataset, split=split, progress=lambda line: None)
    with pytest.raises(ValueError, match="split is"):
        run_evaluation(_config(("pop",)), dataset=dataset, split=replace(split, protocol="random-811"))


def test_unknown_methods_fail_before_any_data_is_loaded():
    with pytest.raises(ValueError, match="unknown model"):
        run_evaluation(_config(("pop", "no-such-model")))  # no dataset given: loading would be next


@pytest.mark.parametrize("params, message", [
    ({"ease": {"l3": 5.0}}, r"ease has no setting 'l3' \(its settings: l2, seed\)"),
    ({"ease": {"l2": "abc"}}, "ease.l2='abc': needs a finite number"),
    ({"lm-finetuned": {"steps": 0}}, "lm-finetuned: fine-tuning needs steps >= 1"),
    ({"lm-finetuned": {"temperature": 0.0, "batch_size": 4}}, "lm-finetuned: fine-tuning needs temperature > 0"),
    ({"fused": {"candidtes": 25}}, "fused has no setting 'candidtes' \\(its settings: candidates, "),
    # Values of the right kind but out of range: numpy's "negative dimensions are not allowed", implicit's
    # "NaN encountered in factors" or a run to the end with a model that learned nothing, before.
    ({"als": {"factors": -3}}, "als with factors=-3: factors and iterations must be >= 1"),
    ({"als": {"alpha": -1.0}}, "regularization, alpha and num_threads must be >= 0"),
    ({"bpr": {"factors": 0}}, "bpr with factors=0: factors and iterations must be >= 1"),
    ({"bpr": {"learning_rate": 0.0}}, "learning_rate must be > 0"),
    ({"als": {"seed": -1}}, "als.seed=-1: needs a whole number from 0 to 4294967295"),
    ({"bpr": {"seed": 2**32}}, "bpr.seed=4294967296: needs a whole number from 0 to 4294967295"),
    ({"lm-finetuned": {"learning_rate": 0.0, "batch_size": 4}}, "fine-tuning needs learning_rate > 0"),
    ({"lm-finetuned": {"frozen_layers": -1, "batch_size": 4}}, "fine-tuning needs frozen_layers >= 0"),
    ({"fused": {"candidates": 0}}, "candidates must be at least 1, got 0"),
    ({"fused": {"cold_share": 1.0}}, r"cold_share in \[0, 1\)"),
])
def test_a_bad_setting_stops_the_run_before_the_first_fit(history_lover, params, message):
    dataset, split = two_group_split()
    methods = (history_lover.name, *params)
    with pytest.raises(ValueError, match=message):
        run_evaluation(_config(methods, model_params=params), dataset=dataset, split=split, progress=lambda line: None)
    assert history_lover.fitted_on == []  # refused before the first method was fitted


def test_fused_without_a_user_to_hold_out_is_refused_before_the_first_fit(history_lover):
    dataset, split = two_group_split()
    short = split.train.select(np.concatenate([np.flatnonzero(split.train.user == u)[:2] for u in range(N_USERS)]))
    with pytest.raises(ValueError, match="fused: no user has 3 or more training interactions"):
        run_evaluation(_config((history_lover.name, "fused"), model_params={"fused": {"lm": "lm-pretrained"}}),
                       dataset=dataset, split=replace(split, train=short),
                       progress=lambda line: None)
    assert history_lover.fitted_on == []


@pytest.mark.parametrize("tune_metric", ["ndcg@10", "accuracy@2", "ndcg"])
def test_tune_metric_must_be_measured(tune_metric):
    with pytest.raises(ValueError, match="tune_metric"):
        EvaluateConfig(data=None, protocol="temporal-loo", methods=("pop",), ks=(2, 4), tune_metric=tune_metric)


def test_records_keep_each_test_users_ndcg_at_10_in_json_when_measured():
    dataset, split = two_group_split()
    with_ten = run_evaluation(replace(_config(("pop",)), ks=(2, 10)), dataset=dataset, split=split,
                              progress=lambda *_: None)[0]
    values = with_ten.per_user["ndcg@10"]
    assert len(values) == with_ten.n_test_users and np.mean(values) == pytest.approx(with_ten.metrics["ndcg@10"])
    # In the order of the sorted test users, each one's own value, recomputed from the ranked list by hand.
    test_users = sorted(set(split.test.user.tolist()))
    known = histories_of(concat(split.train, split.valid), dataset.n_users)
    popularity = np.bincount(concat(split.train, split.valid).item, minlength=dataset.n_items)
    for position, user in enumerate(test_users):
        ranked = [i for i in np.argsort(-popularity, kind="stable") if i not in set(known[user].tolist())][:10]
        targets = set(split.test.item[split.test.user == user].tolist())
        dcg = sum(1 / np.log2(rank + 2) for rank, item in enumerate(ranked) if item in targets)
        ideal = sum(1 / np.log2(rank + 2) for rank in range(min(len(targets), 10)))
        assert values[position] == pytest.approx(dcg / ideal)
    entry = records_to_json([with_ten])["records"][0]
    assert entry["per_user"]["ndcg@10"] == pytest.approx(list(values), abs=1e-6)
    assert entry["test_set"] == with_ten.test_set and len(with_ten.test_set) == 40
    # Without 10 among the cutoffs there is nothing to keep, and the JSON says nothing.
    without = run_evaluation(_config(("pop",)), dataset=dataset, split=split, progress=lambda *_: None)[0]
    assert without.per_user == {} and "per_user" not in records_to_json([without])["records"][0]


def test_the_chance_that_a_random_order_hits_counts_every_target_and_only_unseen_items():
    from math import comb

    from lmrec.export.evaluate import random_hit_rate

    chance = random_hit_rate(np.array([20, 20, 20, 1682, 5]), np.array([1, 3, 0, 6, 5]), 10)
    expected = [1 - comb(19, 10) / comb(20, 10), 1 - comb(17, 10) / comb(20, 10), 0.0,
                1 - comb(1676, 10) / comb(1682, 10), 1.0]
    np.testing.assert_allclose(chance, expected, rtol=1e-12)
    assert chance[3] > 6 * 10 / 1682 * 0.95  # six targets: about six times the one-target 10 / items
    assert random_hit_rate(np.array([5]), np.array([0]), 10)[0] == 0.0  # no target: nothing to hit, however few items
