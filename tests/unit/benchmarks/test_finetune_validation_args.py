"""The fine-tuning chooser's command line: a bad setting is named before any data is read or model trained."""

from __future__ import annotations

import pytest

import lmrec.benchmarks.finetune_validation as chooser


class Reached(Exception):
    pass


@pytest.fixture
def data_never_read(monkeypatch):
    def load_dataset(config):  # the first thing a run does once its arguments are accepted
        raise Reached(config.data_dir)

    monkeypatch.setattr(chooser, "load_dataset", load_dataset)


@pytest.mark.parametrize("setting, named", [('{"max_lenght": 256}', "max_lenght"),
                                             ('{"temperature": "warm"}', "temperature"),
                                             ("max_length=256", "not JSON")])
def test_a_bad_setting_stops_the_run_before_the_data_is_read(tmp_path, capsys, data_never_read, setting, named):
    with pytest.raises(SystemExit) as stopped:
        chooser.main(["--data-dir", str(tmp_path), '{"max_length": 128}', setting])
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


def test_good_settings_reach_the_run(tmp_path, data_never_read):
    with pytest.raises(Reached):
        chooser.main(["--data-dir", str(tmp_path), '{"max_length": 128}', '{"max_length": 256, "steps": 10}'])
