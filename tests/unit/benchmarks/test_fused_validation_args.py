"""The fused-settings chooser's command line: settings placed after --rankers get a message naming the cause."""

from __future__ import annotations

import pytest

from lmrec.benchmarks.fused_validation import main


def test_settings_swallowed_by_rankers_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(tmp_path), "--rankers", "{}", '{"holdout": "random"}'])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "FusedRecommender settings" in error and "before --rankers" in error
