"""The fused model's training-set construction: hold-outs and pseudo-cold items."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.dataset import Interactions


def test_fused_pseudo_cold_items_leave_the_inner_set_entirely():
    from lmrec.export.models.fused import move_items_to_held_out, split_holdout

    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(20), 10)
    items = rng.integers(0, 30, size=len(users))
    train = Interactions.from_lists(users, items, timestamp=np.arange(len(users))).sorted()
    inner, held = split_holdout(train, 20, "random", rng)
    inner2, held2 = move_items_to_held_out(inner, held, 0.2, rng)
    cold = np.setdiff1d(np.unique(inner.item), np.unique(inner2.item))
    assert len(cold) == round(0.2 * len(np.unique(inner.item)))
    assert not np.isin(inner2.item, cold).any()  # no training evidence left for a pseudo-cold item
    assert len(inner2) + len(held2) == len(train)  # nothing lost, nothing duplicated
    assert np.isin(cold, held2.item).all()


# --- fused-int8: the fp32 fit served with the int8 encoder ----------------------------------------

_TINY = {"lm_params": {"steps": 2, "batch_size": 4, "max_pairs_per_user": 3}, "candidates": 5, "ranker": {"epochs": 3}}


def _tiny_data():
    from tests.unit.export.test_models import two_groups

    dataset, train, _ = two_groups()
    return dataset, train


def _ranker_bytes(model) -> bytes:
    from pathlib import Path

    return Path(model.onnx_path).read_bytes()


def test_fused_int8_serves_the_fp32_ranker_with_int8_embeddings():
    from lmrec.export.models import fused as fused_module
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fused_module._LAST_FP32_FIT.clear()
    int8 = make_model("fused-int8", seed=3, **_TINY).fit(dataset, train)  # fits its own fp32 model first
    fused_module._LAST_FP32_FIT.clear()
    fp32 = make_model("fused", seed=3, **_TINY).fit(dataset, train)

    # The same ranker, trained on fp32 features (a fit is deterministic), not a second one.
    assert _ranker_bytes(int8) == _ranker_bytes(fp32)
    assert int8.precision == "int8" and int8.lm_model.encoder is not fp32.lm_model.encoder
    # Item embeddings from the quantised encoder: close to fp32's, not identical.
    assert not np.array_equal(int8.item_embeddings, fp32.item_embeddings)
    cosines = np.sum(int8.item_embeddings * fp32.item_embeddings, axis=1) / (
        np.linalg.norm(int8.item_embeddings, axis=1) * np.linalg.norm(fp32.item_embeddings, axis=1))
    assert cosines.min() > 0.9
    assert fp32.item_embeddings is not int8.item_embeddings and fp32.lm_model.item_embeddings is fp32.item_embeddings


def test_fused_int8_reuses_the_fp32_fit_of_the_same_settings_and_data():
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fp32 = make_model("fused", seed=5, **_TINY).fit(dataset, train)
    int8 = make_model("fused-int8", seed=5, **_TINY).fit(dataset, train)
    assert int8.ranker is fp32.ranker  # no second fit
    other_seed = make_model("fused-int8", seed=6, **_TINY).fit(dataset, train)
    assert other_seed.ranker is not fp32.ranker


def test_with_encoder_refuses_embeddings_of_another_catalogue():
    import pytest

    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fp32 = make_model("fused", seed=5, **_TINY).fit(dataset, train)
    with pytest.raises(ValueError, match="same catalogue"):
        fp32.with_encoder(fp32.lm_model.encoder, fp32.item_embeddings[:-1])


def test_the_ranker_settings_follow_the_holdout_and_an_explicit_setting_wins():
    import pytest

    from lmrec.export.models.fused import FusedRecommender

    random = FusedRecommender(holdout="random").ranker_config
    assert random.prior is False and random.hidden == () and random.early_stopping_folds == 5  # linear, 5-fold CV
    last = FusedRecommender(holdout="last").ranker_config
    assert last.prior is False and last.early_stopping_folds == 1
    assert FusedRecommender(holdout="last", ranker={"prior": True}).ranker_config.prior is True
    # Trained for new items: no CF prior, which could never rank them.
    assert FusedRecommender(holdout="random", cold_share=0.1).ranker_config.prior is False
    with pytest.raises(ValueError, match="holdout must be one of \\['last', 'random'\\], got 'first'"):
        FusedRecommender(holdout="first")


def test_a_retrained_fp32_model_is_not_reused_by_fused_int8():
    from dataclasses import replace

    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fp32 = make_model("fused", seed=8, **_TINY).fit(dataset, train)
    fp32.retrain_ranker(replace(fp32.ranker_config, epochs=2))
    int8 = make_model("fused-int8", seed=8, **_TINY).fit(dataset, train)
    assert int8.ranker is not fp32.ranker


def test_a_failed_encoder_export_leaves_no_cache_entry(tmp_path, monkeypatch):
    import pytest

    import lmrec.export.encoder_export as encoder_export
    from lmrec.export.models import lm

    def failing_export(config, progress=None):
        (config.output_dir / "model_int8.onnx").write_bytes(b"half-written")
        raise encoder_export.ParityError("int8 model disagrees")

    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(encoder_export, "export_encoder", failing_export)
    with pytest.raises(encoder_export.ParityError):
        lm.exported_encoder(str(tmp_path / "no-such-model"), "int8")
    assert list((tmp_path / "encoders").iterdir()) == []


def test_random_holdouts_stack_over_two_folds_and_other_setups_over_one():
    import pytest

    from lmrec.export.models.fused import FusedRecommender

    assert FusedRecommender(holdout="random").holdout_folds == 2
    assert FusedRecommender(holdout="last").holdout_folds == 1
    assert FusedRecommender(holdout="random", cold_share=0.1).holdout_folds == 1
    assert FusedRecommender(holdout="random", holdout_folds=3).holdout_folds == 3
    with pytest.raises(ValueError, match="holdout_folds must be at least 1, got 0"):
        FusedRecommender(holdout_folds=0)
    with pytest.raises(ValueError, match="holdout_folds=2 needs holdout='random'"):
        FusedRecommender(holdout="last", holdout_folds=2)


def test_two_folds_give_users_a_list_each_and_the_encoder_sees_neither_fold(monkeypatch):
    from lmrec.export.models import fused as fused_module
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fitted_on = {}
    real_make_model = fused_module.make_model
    cf_fits, targets_seen = [], []
    real_fit_cf, real_targets = fused_module.FusedRecommender._fit_cf_signals, fused_module.targets_by_user

    def recording_fit_cf(self, dataset, interactions):
        cf_fits.append(interactions)
        return real_fit_cf(self, dataset, interactions)

    def recording_targets(interactions):
        targets_seen.append(interactions)
        return real_targets(interactions)

    monkeypatch.setattr(fused_module.FusedRecommender, "_fit_cf_signals", recording_fit_cf)
    monkeypatch.setattr(fused_module, "targets_by_user", recording_targets)

    def recording_make_model(name, **kwargs):
        model = real_make_model(name, **kwargs)
        if name == "lm-finetuned":
            fit = model.fit

            def recording_fit(dataset, interactions):
                fitted_on["lm"] = interactions
                return fit(dataset, interactions)

            model.fit = recording_fit
        return model

    monkeypatch.setattr(fused_module, "make_model", recording_make_model)
    one = make_model("fused", seed=4, holdout="random", holdout_folds=1, **_TINY).fit(dataset, train)
    lm_one = fitted_on["lm"]
    two = make_model("fused", seed=4, holdout="random", **_TINY).fit(dataset, train)
    lm_two = fitted_on["lm"]
    lists_one, lists_two = len(one._ranker_training_data[0]), len(two._ranker_training_data[0])
    assert one._ranker_groups is None
    assert len(two._ranker_groups) == lists_two > lists_one
    assert max(np.bincount(two._ranker_groups)) == 2  # a user has at most one list per fold
    assert len(lm_two) < len(lm_one) < len(train)  # the encoder trains on what neither fold holds

    def pairs(interactions):
        return set(zip(interactions.user.tolist(), interactions.item.tolist(), interactions.timestamp.tolist()))

    # The two-fold fit: per fold, signals fitted on train minus that fold (the fold's targets unseen),
    # then a refit on all of train; the encoder saw no row of either fold.
    folds, fits = targets_seen[-2:], cf_fits[-3:]
    assert not pairs(folds[0]) & pairs(folds[1])
    for fold, fitted in zip(folds, fits[:2]):
        assert not pairs(fold) & pairs(fitted) and len(fitted) + len(fold) == len(train)
    assert len(fits[2]) == len(train)
    assert not (pairs(folds[0]) | pairs(folds[1])) & pairs(lm_two)


def test_a_user_served_alone_gets_the_candidates_and_features_of_the_batched_offline_path():
    """The gateway asks for one user per request with the profile Triton encoded; offline scoring
    (which the quality figures come from) encodes a batch itself. Both must describe a user alike."""
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fused = make_model("fused", seed=3, **_TINY).fit(dataset, train)
    users = np.unique(train.user)
    histories = [train.item[train.user == u] for u in users]
    profiles = fused.lm_model.user_embeddings(users, histories)
    batch_candidates, batch_features, names = fused.features(users, histories)
    assert len(names) == batch_features[0].shape[1]
    for row, user in enumerate(users):
        [candidates], [features], _ = fused.features(np.array([user]), [histories[row]], profile=profiles[row : row + 1],
                                                     excluded=[np.unique(histories[row])])
        np.testing.assert_array_equal(candidates, batch_candidates[row])
        # Only the dense products differ, in float rounding (one row against a batch in BLAS).
        np.testing.assert_allclose(features, batch_features[row], rtol=1e-4, atol=1e-5)


def test_every_protocol_has_fused_settings_for_what_it_tests():
    from lmrec.export.models.fused import settings_for_protocol
    from lmrec.export.splits import PROTOCOLS

    settings = {protocol: settings_for_protocol(protocol) for protocol in PROTOCOLS}  # a new protocol must say
    assert settings["temporal-loo"] == settings["sparse-users"] == {"holdout": "last"}
    assert settings["random-811"] == {"holdout": "random"}
    assert settings["cold-items"] == {"holdout": "random", "cold_share": 0.1}
    with pytest.raises(ValueError, match="no fused settings for protocol 'leave-two-out'"):
        settings_for_protocol("leave-two-out")


def _with_three_added_items(fused, dataset, train, *, n_users: int):
    """`fused` with three items added after training (as AddItems does), and the first users' histories."""
    from lmrec.export.dataset import ItemInfo

    infos = [ItemInfo(title=dataset.items[i].title + " returns", categories=dataset.items[i].categories)
             for i in (0, 1, 7)]
    extended = fused.with_items(fused.lm_model.encoder.encode([info.title for info in infos]), infos)
    users = np.unique(train.user)[:n_users]
    return extended, users, [train.item[train.user == u] for u in users]


def test_new_item_ranks_order_items_without_interactions_among_themselves():
    """With `new_item_ranks`, an item nobody has interacted with (here: added after training) gets the
    reciprocal rank of its encoder and graph scores among such items; every other item gets 0. Off by
    default, so bundles and published figures keep their features."""
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    plain = make_model("fused", seed=3, **_TINY).fit(dataset, train)
    assert not any(name.startswith("new_") for name in plain.trained.feature_names)
    fused = make_model("fused", seed=3, new_item_ranks=True, cold_share=0.3, **_TINY).fit(dataset, train)
    assert {"new_lm_rr", "new_kg_rr"} <= set(fused.trained.feature_names)

    extended, users, histories = _with_three_added_items(fused, dataset, train, n_users=3)
    scores, extra = extended._signal_scores(users, histories)
    new = np.arange(dataset.n_items, dataset.n_items + 3)
    assert np.all(extra["new_lm_rr"][:, : dataset.n_items] == 0.0)
    for row in range(len(users)):
        by_text = new[np.argsort(-scores["lm"][row, new], kind="stable")]
        np.testing.assert_allclose(extra["new_lm_rr"][row, by_text], [1.0, 0.5, 1 / 3])
    # The served path (one user, Triton's profile) ranks the added items with the same features.
    profile = extended.lm_model.user_embeddings(users[:1], histories[:1])
    [candidates], [features], names = extended.features(users[:1], histories[:1], profile=profile,
                                                          excluded=[np.unique(histories[0])])
    column = names.index("new_lm_rr")
    on_new = np.isin(candidates, new)
    assert on_new.any() and np.all(features[on_new, column] > 0) and np.all(features[~on_new, column] == 0)


def test_new_item_demand_is_on_where_the_ranker_learns_new_items_and_ranks_added_items_by_their_text():
    """`new_demand_rr`: items without interactions ranked by the demand their text predicts among the
    items that were new while the ranker learnt (the same for every user). On by default with
    `cold_share`, off without it (the published figures of the other protocols were measured without it),
    and an added item gets it from its text."""
    from lmrec.export.models.base import make_model
    from lmrec.export.models.content_demand import ranks_against_reference

    dataset, train = _tiny_data()
    plain = make_model("fused", seed=3, **_TINY)
    assert plain.new_item_demand is False
    assert not make_model("fused", seed=3, cold_share=0.3, new_item_demand=False, **_TINY).new_item_demand
    fused = make_model("fused", seed=3, cold_share=0.3, **_TINY).fit(dataset, train)
    assert "new_demand_rr" in fused.trained.feature_names

    extended, users, histories = _with_three_added_items(fused, dataset, train, n_users=2)
    _, extra = extended._signal_scores(users, histories)
    reference = fused.demand_reference_items
    assert len(reference) >= round(0.3 * len(np.unique(train.item)))  # at least the items made new for the ranker
    predicted = fused.content_demand.predict(extended.item_embeddings)
    expected = ranks_against_reference(predicted, predicted[reference], extended.log_popularity)
    np.testing.assert_allclose(extra["new_demand_rr"], np.broadcast_to(expected, extra["new_demand_rr"].shape))
    new = np.arange(dataset.n_items, dataset.n_items + 3)
    assert np.all(extra["new_demand_rr"][:, new] > 0)
    assert np.all(extra["new_demand_rr"][:, extended.log_popularity > 0] == 0)

    # Another encoder's embeddings (how fused-int8 and an int8 build serve): ranked from those.
    shuffled = fused.item_embeddings[::-1].copy()
    swapped = fused.with_encoder(fused.lm_model.encoder, shuffled)
    predicted = fused.content_demand.predict(shuffled)
    np.testing.assert_allclose(swapped.new_demand_rr,
                               ranks_against_reference(predicted, predicted[reference], fused.log_popularity))


def test_an_added_items_demand_rank_does_not_depend_on_how_many_items_are_new():
    """Ranked among whichever items are new, the first item added to a catalogue where every item has
    interactions was 1.0 whatever its text; against the ranker's reference it keeps its place."""
    from lmrec.export.models.base import make_model

    from lmrec.export.dataset import ItemInfo

    dataset, train = _tiny_data()
    fused = make_model("fused", seed=3, cold_share=0.3, **_TINY).fit(dataset, train)
    infos = [ItemInfo(title=dataset.items[i].title + " returns", categories=dataset.items[i].categories)
             for i in (0, 1, 7)]
    embeddings = fused.lm_model.encoder.encode([info.title for info in infos])
    three, alone = fused.with_items(embeddings, infos), fused.with_items(embeddings[:1], infos[:1])
    first = dataset.n_items
    assert alone.new_demand_rr[first] == three.new_demand_rr[first]
    predicted = fused.content_demand.predict(three.item_embeddings)
    above = int(np.sum(predicted[fused.demand_reference_items] > predicted[first]))
    assert three.new_demand_rr[first] == pytest.approx(1.0 / (1.0 + above))


def test_new_item_demand_takes_true_or_false_only():
    from lmrec.export.models.base import make_model

    for value in ("yes", 1):
        with pytest.raises(ValueError, match=f"fused.new_item_demand={value!r}: needs true or false"):
            make_model("fused", new_item_demand=value)


def test_an_added_item_sent_again_with_new_text_gets_the_demand_rank_of_its_new_text():
    from lmrec.export.models.base import make_model

    dataset, train = _tiny_data()
    fused = make_model("fused", seed=3, cold_share=0.3, **_TINY).fit(dataset, train)
    extended, _, _ = _with_three_added_items(fused, dataset, train, n_users=1)
    added = np.arange(dataset.n_items, dataset.n_items + 3)
    before = extended.new_demand_rr[added].copy()
    assert not np.array_equal(before, before[::-1])  # so that the exchange below shows
    swapped = extended.item_embeddings.copy()
    swapped[added] = swapped[added[::-1]]  # the three added items exchange texts (as AddItems replaces them)
    extended.set_item_embeddings(swapped)
    np.testing.assert_allclose(extended.new_demand_rr[added], before[::-1])


def test_features_prepared_before_the_profile_equal_the_whole_row_definitions():
    """The gateway computes the history-only half of the features while Triton encodes the profile
    (`prepare_features`), then the rest (`finish_features`). Together they give the candidates and
    features of every signal scored at once and read at the candidates (`select_candidates` and
    `candidate_features`, checked against their whole-row definitions in test_ranker_features.py), in
    the trained feature order, also with the new-item features and items added after training."""
    from lmrec.export.models.base import make_model
    from lmrec.export.ranker import candidate_features, select_candidates

    dataset, train = _tiny_data()
    fused = make_model("fused", seed=3, new_item_ranks=True, cold_share=0.3, **_TINY).fit(dataset, train)
    extended, users, histories = _with_three_added_items(fused, dataset, train, n_users=4)
    profiles = extended.lm_model.user_embeddings(users, histories)
    for row, user in enumerate(users):
        excluded = [np.unique(histories[row])[::2]]  # not the history itself: the mask is the gateway's
        one, history, profile = np.array([user]), [histories[row]], profiles[row : row + 1]
        scores, extra = extended._signal_scores(one, history, profile)
        [expected_candidates] = select_candidates(scores, excluded, extended.candidates)
        [expected], expected_names = candidate_features(scores, extra, excluded, [expected_candidates])
        prepared = extended.prepare_features(one, history, excluded)
        [candidates], [features], names = extended.finish_features(prepared, profile)
        assert names == expected_names == list(extended.trained.feature_names)
        np.testing.assert_array_equal(candidates, expected_candidates)
        # The similarities are products at the candidates alone (`Similarity`): equal to the whole row's up
        # to BLAS's rounding of a shorter product (bit for bit with this machine's OpenBLAS).
        similarities = [names.index(name) for name in ("sim_last_item", "sim_recent_items", "interest_tags")]
        rest = [j for j in range(len(names)) if j not in similarities]
        np.testing.assert_array_equal(features[:, rest], expected[:, rest])
        np.testing.assert_allclose(features[:, similarities], expected[:, similarities], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=f"prepared for {dataset.n_items} items, the model now has {dataset.n_items + 3}"):
        extended.finish_features(fused.prepare_features(users[:1], histories[:1]), profiles[:1])
