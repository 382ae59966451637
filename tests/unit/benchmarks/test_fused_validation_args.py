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
