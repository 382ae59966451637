"""The fusion ranker: listwise training, ensembles, and the ONNX graph that serves it."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.ranker import RankerConfig, export_ranker_onnx, train_ranker
from lmrec.ranker_runtime import OnnxRanker


def _lists(n_users: int = 60, n_candidates: int = 12, seed: int = 0):
    """Candidates where feature 0 marks the target (plus noise): a ranker must learn to trust it."""
    rng = np.random.default_rng(seed)
    features, positions = [], []
    for _ in range(n_users):
        x = rng.normal(size=(n_candidates, 3)).astype(np.float32)
        target = int(rng.integers(n_candidates))
        x[target, 0] += 3.0
        features.append(x)
        positions.append(np.array([target]))
    return features, positions


def test_the_trained_ranker_puts_the_marked_candidate_first_on_unseen_lists():
    features, positions = _lists()
    trained = train_ranker(features, positions, ["signal", "noise1", "noise2"], RankerConfig(epochs=30, seed=1, ensemble=1,
                                                                                    early_stopping_folds=0))
    assert trained.last_loss < trained.first_loss
    test_features, test_positions = _lists(seed=9)
    import torch

    hits = [int(np.argmax(trained.module(torch.from_numpy(x)).detach().numpy()) == p[0])
            for x, p in zip(test_features, test_positions)]
    assert np.mean(hits) > 0.6  # random would be 1/12


def test_an_ensemble_scores_the_mean_of_its_members_and_exports_as_one_graph(tmp_path):
    import torch

    features, positions = _lists()
    names = ["signal", "noise1", "noise2"]
    trained = train_ranker(features, positions, names, RankerConfig(epochs=3, ensemble=3, seed=5, early_stopping_folds=0))
    members = list(trained.module.members)
    assert len(members) == 3
    x = torch.from_numpy(features[0])
    member_scores = np.stack([m(x).detach().numpy() for m in members])
    assert not np.allclose(member_scores[0], member_scores[1])  # different seeds, different members
    np.testing.assert_allclose(trained.module(x).detach().numpy(), member_scores.mean(axis=0), rtol=1e-5)
    served = OnnxRanker(export_ranker_onnx(trained, tmp_path / "ranker.onnx"))
    np.testing.assert_allclose(served.score(features[0]), member_scores.mean(axis=0), rtol=1e-4, atol=1e-5)
    # The served config's ort_threads reaches the session (model.py passes it; it used to be fixed at 1).
    two = OnnxRanker(tmp_path / "ranker.onnx", threads=2)
    assert two.session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(two.score(features[0]), served.score(features[0]), rtol=1e-5)


def test_an_ensemble_of_one_is_a_plain_ranker():
    features, positions = _lists()
    one = train_ranker(features, positions, ["a", "b", "c"], RankerConfig(epochs=3, seed=2, ensemble=1, early_stopping_folds=0))
    assert not hasattr(one.module, "members")


def test_an_empty_ensemble_is_refused():
    features, positions = _lists(n_users=5)
    with pytest.raises(ValueError, match="ensemble must be at least 1, got 0"):
        train_ranker(features, positions, ["a", "b", "c"], RankerConfig(ensemble=0))


def test_cross_validation_picks_an_epoch_count_within_the_budget_and_zero_folds_trains_the_full_budget():
    features, positions = _lists()
    names = ["signal", "noise1", "noise2"]
    stopped = train_ranker(features, positions, names, RankerConfig(epochs=8, early_stopping_folds=4, prior=False))
    assert 1 <= stopped.epochs <= 8  # without a prior, an untrained MLP is never chosen
    full = train_ranker(features, positions, names, RankerConfig(epochs=8, early_stopping_folds=0))
    assert full.epochs == 8


def test_a_negative_fold_count_is_refused():
    features, positions = _lists(n_users=5)
    with pytest.raises(ValueError, match="early_stopping_folds must be 0 or more, got -1"):
        train_ranker(features, positions, ["a", "b", "c"], RankerConfig(early_stopping_folds=-1))


def test_the_prior_is_the_strongest_single_feature_and_untrained_the_ranker_orders_like_it(tmp_path):
    import torch

    features, positions = _lists()
    names = ["noise1", "signal", "noise2"]
    features = [x[:, [1, 0, 2]] for x in features]  # the marked feature is not the first column
    trained = train_ranker(features, positions, names, RankerConfig(epochs=0, early_stopping_folds=0, seed=3))
    assert trained.prior == "signal" and trained.epochs == 0
    assert not hasattr(trained.module, "members")  # untrained members would all be the prior: one is kept
    served = OnnxRanker(export_ranker_onnx(trained, tmp_path / "ranker.onnx"))
    for x in features[:10]:
        np.testing.assert_array_equal(np.argsort(-served.score(x), kind="stable"), np.argsort(-x[:, 1], kind="stable"))
    assert np.isnan(trained.first_loss)


def test_cross_validation_keeps_the_prior_alone_when_training_cannot_improve_on_it():
    # Feature 0 alone finds every target; nothing the MLP learns can beat a perfect ordering, and of
    # equal scores the fewest epochs win.
    rng = np.random.default_rng(4)
    features, positions = [], []
    for _ in range(40):
        x = rng.normal(size=(10, 3)).astype(np.float32)
        target = int(rng.integers(10))
        x[target, 0] = x[:, 0].max() + 1.0
        features.append(x)
        positions.append(np.array([target]))
    trained = train_ranker(features, positions, ["perfect", "noise1", "noise2"],
                           RankerConfig(epochs=5, early_stopping_folds=4, seed=1))
    assert trained.prior == "perfect" and trained.epochs == 0
    with_training = train_ranker(features, positions, ["perfect", "noise1", "noise2"],
                                 RankerConfig(epochs=5, early_stopping_folds=4, seed=1, prior=False))
    assert with_training.prior is None and with_training.epochs >= 1


def test_held_out_ndcg_at_10_handles_several_targets_padding_and_short_lists():
    import torch

    from lmrec.export.ranker import _ndcg_at_10

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x[..., 0]

    # List 1: 12 candidates, targets at the ranks 1 and 3 of the scores; list 2: 3 real candidates
    # (the rest padding, which must never be ranked), its one target ranked 2nd.
    x = torch.zeros((2, 12, 1))
    x[0, :, 0] = torch.arange(12, 0, -1, dtype=torch.float32)  # candidate i has rank i + 1
    x[1, :3, 0] = torch.tensor([3.0, 2.0, 1.0])
    x[1, 3:, 0] = 100.0  # padding with high scores: the mask must drop them
    mask = torch.zeros((2, 12), dtype=torch.bool)
    mask[0] = True
    mask[1, :3] = True
    relevant = torch.zeros((2, 12), dtype=torch.bool)
    relevant[0, [0, 2]] = True
    relevant[1, 1] = True
    import math

    first = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    second = (1 / math.log2(3)) / 1.0
    assert abs(_ndcg_at_10(Identity(), x, mask, relevant) - (first + second) / 2) < 1e-6


def test_one_fold_holds_out_a_share_of_the_lists_once():
    features, positions = _lists()
    names = ["signal", "noise1", "noise2"]
    one = train_ranker(features, positions, names, RankerConfig(epochs=6, early_stopping_folds=1, prior=False))
    assert 1 <= one.epochs <= 6 and len(one.validation_curve) == 7
    with pytest.raises(ValueError, match="early_stopping_share must be in \\(0, 1\\), got 1.0"):
        train_ranker(features, positions, names, RankerConfig(early_stopping_folds=1, early_stopping_share=1.0))


def test_cross_validation_parts_cover_every_list_once_and_keep_each_group_whole():
    from lmrec.export.ranker import cross_validation_parts

    groups = np.repeat(np.arange(30), 2)[np.random.default_rng(1).permutation(60)]  # two lists per user, shuffled
    order, parts = cross_validation_parts(60, 5, 0.2, seed=7, groups=groups)
    held = np.concatenate([p.numpy() for p in parts])
    assert sorted(held.tolist()) == list(range(60))  # disjoint, and every list is held out once
    for part in parts:
        inside = set(groups[part.numpy()].tolist())
        outside = set(groups[np.setdiff1d(np.arange(60), part.numpy())].tolist())
        assert not inside & outside  # a user's other list never trains the fold that tests it
    assert sorted(order.tolist()) == list(range(60))
    _, (single,) = cross_validation_parts(60, 1, 0.2, seed=7, groups=groups)
    assert len(single) == 2 * round(0.2 * 30)  # whole groups: 6 users, both lists each


def test_groups_must_name_every_list():
    features, positions = _lists(n_users=6)
    with pytest.raises(ValueError, match="groups has 5 entries for 6 lists"):
        train_ranker(features, positions, ["a", "b", "c"], RankerConfig(), groups=[0, 1, 2, 3, 4])


def test_grouped_cross_validation_cuts_folds_from_groups_even_when_lists_outnumber_them():
    # 3 users with 4 lists each: 5 folds over 12 lists would leave 2 folds without a user; the fold
    # count is capped by the groups, so every fold holds out some lists and the curve is finite.
    features, positions = _lists(n_users=12)
    groups = [u // 4 for u in range(12)]
    trained = train_ranker(features, positions, ["signal", "noise1", "noise2"],
                           RankerConfig(epochs=3, early_stopping_folds=5, prior=False, ensemble=1), groups=groups)
    assert len(trained.validation_curve) == 4 and np.isfinite(trained.validation_curve).all()
    # One fold of 20% of 2 users rounds to none: cross-validation is skipped, the full budget trained.
    two_users = train_ranker(features[:8], positions[:8], ["signal", "noise1", "noise2"],
                             RankerConfig(epochs=3, early_stopping_folds=1, prior=False, ensemble=1), groups=groups[:8])
    assert two_users.validation_curve == () and two_users.epochs == 3
