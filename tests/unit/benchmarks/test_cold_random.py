"""The cold-target bar's random baseline recomputed for a published record: same split, checked, written back."""

from __future__ import annotations

import json

import pytest

from lmrec.benchmarks.cold_random import cold_random_hit, main


def test_it_adds_the_baseline_to_a_records_file_and_refuses_a_record_of_another_test_set(ml100k_dir, tmp_path, capsys):
    chance, new_only, users, fingerprint = cold_random_hit("ml-100k", ml100k_dir, seed=42)
    assert users == 867 and 10 / 1682 < chance < 1  # several cold targets each, seen items never ranked
    assert chance < new_only < 1  # the split makes nearly every item without interactions a cold target
    record = {"dataset": "ml-100k", "protocol": "cold-items", "method": "fused", "seed": 42, "n_items": 1682,
              "n_test_users": 900, "seconds": 0, "metrics": {"ndcg@10": 0.3}, "n_cold_test_users": users,
              "test_set": fingerprint, "cold_metrics": {"cold_hit@10": 0.5}}
    results = tmp_path / "quality-x.json"
    results.write_text(json.dumps({"machine": {"cpu_model": "cpu", "cores": 2}, "config": {"seed": 42},
                                   "records": [record], "bars": []}))
    main([str(results), "--data-root", str(ml100k_dir.parent), "--write"])
    saved = json.loads(results.read_text())
    assert saved["records"][0]["cold_metrics"]["cold_random_hit@10"] == pytest.approx(chance)
    assert saved["records"][0]["cold_metrics"]["cold_no_interactions_random_hit@10"] == pytest.approx(new_only)
    [reference] = [b for b in saved["bars"] if "without interactions" in b["bar"]]
    assert reference["value"] == pytest.approx(0.5 / new_only) and reference["met"] is None
    [bar] = [b for b in saved["bars"] if "vs random" in b["bar"]]
    assert bar["value"] == pytest.approx(0.5 / chance) and "cold_random" in (tmp_path / "quality-x.md").read_text()
    assert f"{0.5 / chance:.1f}x" in capsys.readouterr().out

    results.write_text(json.dumps({"records": [{**record, "test_set": "0" * 40}]}))
    with pytest.raises(SystemExit, match="not the record's test set"):
        main([str(results), "--data-root", str(ml100k_dir.parent)])
