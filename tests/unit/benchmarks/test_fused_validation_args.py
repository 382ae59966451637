"""The fused-settings chooser's command line: settings placed after --rankers get a message naming the cause,
and settings placed before it still reach the run."""

from __future__ import annotations

import pytest

import lmrec.benchmarks.fused_validation as chooser


def test_settings_swallowed_by_rankers_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        chooser.main(["--data-dir", str(tmp_path), "--rankers", "{}", '{"holdout": "random"}'])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "FusedRecommender settings" in error and "put them before it" in error


def test_settings_before_rankers_reach_the_run(tmp_path, monkeypatch):
    class Reached(Exception):
        pass

    def load_dataset(config):  # the first thing a run does once its arguments are accepted
        raise Reached(config.data_dir)

    monkeypatch.setattr(chooser, "load_dataset", load_dataset)
    with pytest.raises(Reached):
        chooser.main(["--data-dir", str(tmp_path), '{"holdout": "random"}', "--rankers", "{}", '{"hidden": [8]}'])


def test_cold_items_validation_reports_cold_targets_and_references():
    """On cold-items, a model that puts 10 of the valid-cold items first hits exactly the validation users
    with one of them as a target, and the new-items reference counts the items without *training*
    interactions (the test's cold items among them), not those without train or valid ones."""
    import numpy as np

    from lmrec.export.evaluate import _ranking_task, random_hit_rate
    from lmrec.export.loaders import DataConfig, load_dataset
    from lmrec.export.splits import split_dataset

    dataset = load_dataset(DataConfig(dataset="synthetic")).dataset
    split = split_dataset(dataset, "cold-items", seed=42)
    valid = _ranking_task(split.train, split.valid, dataset.n_users)
    valid_cold = np.unique(split.valid.item[np.isin(split.valid.item, split.cold_items)])

    class ValidColdFirst:
        def score(self, users, histories):
            scores = np.zeros((len(users), dataset.n_items), np.float32)
            scores[:, valid_cold[:10]] = 1.0
            return scores

    line = chooser.describe_validation(ValidColdFirst(), dataset, valid, split)
    assert "cold hit@10" in line and "new-items random" in line
    cold_hit = float(line.split("cold hit@10 ")[1].split()[0])
    new_items_random = float(line.split("new-items random ")[1].split(",")[0])
    # The first 10 valid-cold items: every cold-target user with one of them as a target is hit.
    targets = [t for t in valid.targets if np.isin(t, split.cold_items).any()]
    expected = np.mean([np.isin(t, valid_cold[:10]).any() for t in targets])
    assert cold_hit == pytest.approx(expected, abs=1e-4)
    untouched = dataset.n_items - len(np.unique(split.train.item))
    assert untouched > len(valid_cold)  # the test's cold items are new at validation too
    expected_reference = random_hit_rate(np.full(len(targets), untouched),
                                         np.array([np.isin(t, split.cold_items).sum() for t in targets]), 10).mean()
    assert new_items_random == pytest.approx(expected_reference, abs=1e-4)
    assert len(valid_cold) > 10 and 0.0 < new_items_random < cold_hit < 1.0
