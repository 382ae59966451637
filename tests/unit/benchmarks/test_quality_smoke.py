"""A small smoke run of the quality suite: every file it promises, well-formed, on synthetic data."""

from __future__ import annotations

import json

import pytest

from lmrec.benchmarks.quality import QualityConfig, bar_checks, run_quality


def test_quality_suite_smoke_run_writes_json_markdown_and_plot(tmp_path):
    config = QualityConfig(
        protocols=("temporal-loo", "cold-items"),
        methods=("pop", "ease", "sequential", "lm-finetuned", "fused"),
        finetune={"steps": 2, "batch_size": 4, "max_pairs_per_user": 2},
        out_dir=tmp_path, name="smoke", synthetic_users=40,
    )
    payload = run_quality(config, progress=lambda *_: None)
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert {(r["protocol"], r["method"]) for r in saved["records"]} == {
        (p, m) for p in ("temporal-loo", "cold-items") for m in config.methods}
    for record in saved["records"]:
        assert 0.0 <= record["metrics"]["ndcg@10"] <= 1.0
        assert len(record["per_user"]["ndcg@10"]) == record["n_test_users"]  # for the bars' paired intervals
        if record["protocol"] == "cold-items":
            cold = record["cold_metrics"]
            assert "cold_hit@10" in cold and 0 < cold["cold_random_hit@10"] <= cold["cold_no_interactions_random_hit@10"]
    assert saved["machine"]["cores"] >= 1 and "numpy" in saved["machine"]["packages"]
    markdown = (tmp_path / "smoke.md").read_text()
    assert "| fused |" in markdown and "## Bars" in markdown
    assert (tmp_path / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    # The fused model received the baselines' tuned settings, not its defaults.
    fused = next(r for r in saved["records"] if r["method"] == "fused" and r["protocol"] == "temporal-loo")
    ease = next(r for r in saved["records"] if r["method"] == "ease" and r["protocol"] == "temporal-loo")
    assert fused["params"]["signals"]["ease"] == ease["params"]
    assert payload["bars"] == saved["bars"]


def test_bar_checks_compare_against_the_best_baseline():
    def record(method, ndcg, protocol="temporal-loo"):
        return {"dataset": "ml-100k", "protocol": protocol, "method": method, "metrics": {"ndcg@10": ndcg}, "n_items": 100}

    bars = bar_checks([record("pop", 0.02), record("ease", 0.05), record("fused", 0.056),
                       record("lm-pretrained", 0.02), record("lm-finetuned", 0.031)])
    fused_bar = next(b for b in bars if b["bar"].startswith("fused ndcg@10"))
    assert "ease" in fused_bar["bar"] and abs(fused_bar["value"] - 1.12) < 1e-9 and fused_bar["met"]
    lm_bar = next(b for b in bars if b["bar"].startswith("lm-finetuned"))
    assert abs(lm_bar["value"] - 1.55) < 1e-9 and lm_bar["met"]


def test_reused_records_fill_only_what_the_run_did_not_measure_and_are_marked(tmp_path):
    from lmrec.benchmarks.quality import render_markdown

    previous = {"suite": "quality", "command": "lmrec bench quality --old", "records": [
        {"dataset": "synthetic", "protocol": "temporal-loo", "method": "pop", "metrics": {"ndcg@10": 0.999},
         "n_items": 40, "n_test_users": 40, "seconds": 0},
        {"dataset": "synthetic", "protocol": "temporal-loo", "method": "lm-pretrained",
         "metrics": {"ndcg@10": 0.01}, "n_items": 40, "n_test_users": 40, "seconds": 0}]}
    (tmp_path / "old.json").write_text(json.dumps(previous))
    config = QualityConfig(protocols=("temporal-loo",), methods=("pop",), out_dir=tmp_path, name="new",
                           synthetic_users=40, reuse=(tmp_path / "old.json",))
    payload = run_quality(config, progress=lambda *_: None)
    by_method = {r["method"]: r for r in payload["records"]}
    assert by_method["pop"]["metrics"]["ndcg@10"] != 0.999  # measured now, not carried over
    assert "reused_from" not in by_method["pop"]
    assert by_method["lm-pretrained"]["reused_from"]["command"] == "lmrec bench quality --old"
    markdown = render_markdown(payload)
    assert "| lm-pretrained ¹ |" in markdown and "lmrec bench quality --old" in markdown


def test_fused_alone_takes_its_signals_tuned_as_the_reused_file_records_them():
    """Re-measuring only `fused` against a published file must fit the model it published: a review run
    got the default signals instead, because no baseline was tuned in that run."""
    from types import SimpleNamespace

    from lmrec.benchmarks.quality import tuned_signal_settings

    reused = [{"dataset": "ml-100k", "protocol": "cold-items", "method": "ease", "params": {"l2": 250.0}},
              {"dataset": "ml-100k", "protocol": "cold-items", "method": "als", "params": {"factors": 64}},
              {"dataset": "ml-100k", "protocol": "cold-items", "method": "pop", "params": {}},  # not a signal
              {"dataset": "ml-100k", "protocol": "random-811", "method": "itemknn", "params": {"neighbours": 5}},
              {"dataset": "other", "protocol": "cold-items", "method": "sequential", "params": {"window": 1}}]
    measured_now = [SimpleNamespace(method="als", params={"factors": 32})]
    assert tuned_signal_settings(measured_now, reused, "ml-100k", "cold-items") == {
        "ease": {"l2": 250.0}, "als": {"factors": 32}}  # this run's tuning wins; other splits are not read
    assert tuned_signal_settings([], [], "ml-100k", "cold-items") == {}


def test_reuse_of_a_missing_file_names_it(tmp_path):
    import argparse

    import pytest

    from lmrec.benchmarks.quality import add_arguments, config_from_args
    from lmrec.cli import CliError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(CliError, match="--reuse: no such file 'nowhere.json'"):
        config_from_args(parser.parse_args(["--reuse", "nowhere.json"]))
    with pytest.raises(CliError, match=f"--reuse {tmp_path}: a folder; expected a results file"):
        config_from_args(parser.parse_args(["--reuse", str(tmp_path)]))


def test_a_bar_that_reads_a_carried_over_record_says_so_and_duplicates_are_carried_once(tmp_path):
    from lmrec.benchmarks.quality import _reusable_records

    def record(method, ndcg, **extra):
        return {"dataset": "d", "protocol": "temporal-loo", "method": method, "metrics": {"ndcg@10": ndcg},
                "n_items": 100, **extra}

    old = {"suite": "quality", "command": "old", "machine": {"date": "2026-01-01"}, "records": [record("fused", 0.5)]}
    older = {"suite": "quality", "command": "older", "records": [record("fused", 0.9), record("ease", 0.1)]}
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(older))
    carried = _reusable_records(QualityConfig(reuse=(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "a.json")))
    fused = [r for r in carried if r["method"] == "fused"]
    assert len(fused) == 1 and fused[0]["metrics"]["ndcg@10"] == 0.5  # the first file wins
    assert fused[0]["reused_from"] == {"file": str(tmp_path / "a.json"), "command": "old", "date": "2026-01-01"}
    bars = bar_checks([record("pop", 0.2), fused[0]])
    assert bars[0]["uses_reused"] is True
    assert bar_checks([record("pop", 0.2), record("fused", 0.5)])[0]["uses_reused"] is False


def test_rows_from_several_earlier_runs_name_their_own_run():
    """A report whose rows came from two earlier runs marked both ¹, and the reader could not tell which
    run measured which row; each source now has its own marker, oldest first."""
    from lmrec.benchmarks.quality import render_markdown

    def record(method, ndcg, source=None):
        return {"dataset": "d", "protocol": "temporal-loo", "method": method, "metrics": {"ndcg@10": ndcg},
                "n_items": 100, "n_test_users": 10, "seconds": 1,
                **({"reused_from": source} if source else {})}

    late = {"file": "b.json", "command": "lmrec bench quality --late", "date": "2026-02-01"}
    early = {"file": "a.json", "command": None, "date": "2026-01-01"}
    records = [record("sequential", 0.1, late), record("lm-pretrained", 0.02, early),
               record("lm-finetuned", 0.03, late), record("fused", 0.12)]
    markdown = render_markdown({"machine": {"cpu_model": "cpu", "cores": 2}, "config": {"seed": 42},
                                "records": records, "bars": bar_checks(records)})
    assert "| sequential ¹ᵇ |" in markdown and "| lm-pretrained ¹ᵃ |" in markdown and "| fused |" in markdown
    assert "ᵃ Carried over from `a.json` (2026-01-01), not" in markdown
    assert "ᵇ Carried over from `b.json` (measured by `lmrec bench quality --late`, 2026-02-01)" in markdown
    bar_rows = {line.split(" |")[0].lstrip("| "): line for line in markdown.splitlines() if "vs" in line}
    assert any(name.endswith("temporal-loo ¹ᵇ") and name.startswith("fused ndcg@10") for name in bar_rows)
    assert any(name.endswith("temporal-loo ¹ᵃ,¹ᵇ") and name.startswith("lm-finetuned") for name in bar_rows)
    # A bar from a file written before bars listed their inputs may have read any source: it names them all.
    old_bar = {"bar": "an old bar", "value": 1.0, "needed": 1.0, "met": True, "uses_reused": True}
    markdown = render_markdown({"machine": {"cpu_model": "cpu", "cores": 2}, "config": {"seed": 42},
                                "records": records, "bars": [old_bar]})
    assert "| an old bar ¹ᵃ,¹ᵇ |" in markdown


def test_the_fine_tuning_bar_is_judged_on_ml_100k_only():
    def record(dataset, method, ndcg):
        return {"dataset": dataset, "protocol": "temporal-loo", "method": method, "metrics": {"ndcg@10": ndcg},
                "n_items": 100}

    bars = bar_checks([record(d, m, v) for d in ("ml-100k", "ml-latest-small")
                       for m, v in (("lm-pretrained", 0.02), ("lm-finetuned", 0.024))])
    judged = {b["bar"].split(", ")[1]: b for b in bars if b["bar"].startswith("lm-finetuned")}
    assert judged["ml-100k temporal-loo"]["met"] is False
    assert judged["ml-latest-small temporal-loo"]["met"] is None
    assert "ml-100k only" in judged["ml-latest-small temporal-loo"]["note"]


def test_fused_settings_from_the_command_line_reach_both_fused_methods_and_bad_ones_are_named():
    import argparse

    import pytest

    from lmrec.benchmarks.quality import add_arguments, config_from_args, method_params
    from lmrec.cli import CliError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--param", "fused.candidates=25", "--param", "lm-finetuned.steps=3"]))
    assert config.fused == {"candidates": 25} and config.finetune == {"steps": 3}
    params = method_params("random-811", {"ease": {"l2": 100.0}}, config.finetune, config.fused)
    assert params["fused"]["candidates"] == 25 and params["fused-int8"]["candidates"] == 25
    assert params["fused"]["signals"] == {"ease": {"l2": 100.0}} and params["fused"]["holdout"] == "random"
    with pytest.raises(CliError, match="--param 'ranker.epochs=3'"):
        config_from_args(parser.parse_args(["--param", "ranker.epochs=3"]))


# ---------------------------------------------------------------------------------------------------
# Your own data: `lmrec bench quality --dataset csv --data-dir ...`


def test_the_suite_runs_on_your_own_csv_data_set_named_after_its_folder(tmp_path, capsys, own_csv_dataset):
    from lmrec.cli import main

    folder, dataset, layout = own_csv_dataset
    code = main(["bench", "quality", "--dataset", "csv", "--data-dir", str(folder), *layout,
                 "--protocols", "random-811", "--method", "pop,ease", "--out", str(tmp_path / "out"), "--name", "own"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "own.json").read_text())
    assert {(r["dataset"], r["protocol"], r["method"]) for r in saved["records"]} == {
        ("shop", "random-811", "pop"), ("shop", "random-811", "ease")}
    assert all(r["n_items"] == dataset.n_items for r in saved["records"])
    assert saved["config"]["data"]["dataset"] == "csv" and saved["config"]["data"]["data_dir"] == str(folder)
    assert saved["config"]["data"]["csv"]["user"] == "uid"  # the layout it was read with
    assert saved["command"].startswith("lmrec bench quality --dataset csv --data-dir ")
    assert "## shop · random-811" in (tmp_path / "out" / "own.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "{d}"], "--data-dir needs --dataset"),
    (["--csv", "user=uid"], "--csv needs --dataset"),
    (["--dataset", "csv", "--data-dir", "{d}", "--datasets", "ml-100k"], "--datasets selects other data sets"),
    (["--dataset", "synthetic"], "--smoke-users"),
    (["--dataset", "csv", "--data-dir", "{d}/missing"], "--data-dir {d}/missing is not a directory"),
    (["--dataset", "csv"], "--dataset csv needs --data-dir"),
    (["--implicit-threshold", "4"], "--implicit-threshold needs --dataset"),
    (["--min-user-interactions", "5"], "--min-user-interactions needs --dataset"),
    (["--dataset", "ml-100k", "--data-dir", "{d}", "--csv", "user=uid"], "--dataset ml-100k has its own files"),
])
def test_own_data_options_that_cannot_work_are_named_before_anything_runs(tmp_path, capsys, argv, message):
    from lmrec.cli import main

    argv = [a.format(d=tmp_path) for a in argv]
    assert main(["bench", "quality", *argv, "--out", str(tmp_path / "out")]) == 2
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sparse_users_runs_through_the_suite_and_fused_trains_on_last_items(tmp_path):
    config = QualityConfig(
        protocols=("sparse-users",), methods=("pop", "sequential", "fused"),
        finetune={"steps": 2, "batch_size": 4, "max_pairs_per_user": 2},
        out_dir=tmp_path, name="sparse", synthetic_users=60,
    )
    payload = run_quality(config, progress=lambda *_: None)
    records = {r["method"]: r for r in payload["records"]}
    assert set(records) == {"pop", "sequential", "fused"}
    assert {r["protocol"] for r in records.values()} == {"sparse-users"}
    assert records["fused"]["params"]["holdout"] == "last"
    # A quarter of the 60 users (all have 8 or more interactions) is tested.
    assert all(r["n_test_users"] == 15 for r in records.values())


def test_a_split_that_cannot_work_stops_the_run_before_any_training(tmp_path):
    from lmrec.export.loaders import DataConfig

    # Every user has 4 interactions: enough for temporal-loo (3), too few for sparse-users (5).
    folder = tmp_path / "short"
    folder.mkdir()
    rows = [f"u{u},i{(u + j) % 12},4,{1000 * u + j}" for u in range(20) for j in range(4)]
    (folder / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("item_id,title\n" + "\n".join(f"i{i},Item {i}" for i in range(12)) + "\n")
    config = QualityConfig(protocols=("temporal-loo", "sparse-users"), methods=("pop",), out_dir=tmp_path / "out",
                           name="short", data=DataConfig(dataset="csv", data_dir=folder))
    with pytest.raises(ValueError, match="sparse-users split of 'short' has an empty valid set"):
        run_quality(config, progress=lambda *_: None)
    assert not (tmp_path / "out").exists()  # temporal-loo, first in line, did not run


def test_ndcg_ratio_bars_carry_a_paired_interval_when_both_records_kept_per_user_values():
    from lmrec.benchmarks.quality import render_markdown

    def record(method, per_user, protocol="random-811", seed=42):
        return {"dataset": "d", "protocol": protocol, "method": method, "seed": seed, "n_items": 100,
                "n_test_users": len(per_user), "seconds": 0,
                "metrics": {"ndcg@10": sum(per_user) / len(per_user)}, "per_user": {"ndcg@10": per_user}}

    ease = [0.2, 0.4, 0.0, 0.6] * 50
    fused = [0.2, 0.5, 0.0, 0.5] * 50  # the same mean: ratio 1.0, its interval around it
    bars = bar_checks([record("ease", ease), record("fused", fused), record("fused-int8", [v * 1.1 for v in fused])])
    by = {b["bar"].split(",")[0]: b for b in bars}
    low, high = by["fused ndcg@10 vs best baseline (ease)"]["interval"]
    assert low < 1.0 < high and high - low < 0.2
    assert by["fused-int8 vs fused ndcg@10"]["interval"] == pytest.approx([1.1, 1.1])
    # A record without per-user values (carried over from an older run), or from another seed's split: none.
    old = record("ease", ease)
    del old["per_user"]
    assert "interval" not in bar_checks([old, record("fused", fused)])[0]
    assert "interval" not in bar_checks([record("ease", ease, seed=7), record("fused", fused)])[0]
    # With test-set fingerprints, they decide: the same users and targets, or no pair.
    same, other = {"test_set": "a" * 40}, {"test_set": "b" * 40}
    assert "interval" in bar_checks([{**record("ease", ease), **same}, {**record("fused", fused), **same}])[0]
    assert "interval" not in bar_checks([{**record("ease", ease), **same}, {**record("fused", fused), **other}])[0]
    markdown = render_markdown({"machine": {"cpu_model": "cpu", "cores": 2}, "config": {"seed": 42},
                                "records": [record("ease", ease), record("fused", fused)],
                                "bars": bar_checks([record("ease", ease), record("fused", fused)])})
    assert "| 95% interval ² |" in markdown and f"{low:.3f}–{high:.3f}" in markdown and "² Of the ratio" in markdown


def test_records_are_written_in_suite_order_whatever_was_re_measured():
    from lmrec.benchmarks.quality import _in_table_order

    def record(dataset, protocol, method):
        return {"dataset": dataset, "protocol": protocol, "method": method}

    measured = [record("b", "random-811", "fused"), record("b", "random-811", "ease")]
    carried = [record("a", "temporal-loo", "pop"), record("b", "temporal-loo", "fused"),
               record("b", "temporal-loo", "lm-finetuned"), record("b", "cold-items", "pop")]
    # Data set "a" came first in the carried-over file: re-measuring "b" leaves it first.
    order = _in_table_order(measured + carried, [r["dataset"] for r in carried] + ["b"])
    assert [(r["dataset"], r["protocol"], r["method"]) for r in order] == [
        ("a", "temporal-loo", "pop"), ("b", "temporal-loo", "lm-finetuned"), ("b", "temporal-loo", "fused"),
        ("b", "random-811", "ease"), ("b", "random-811", "fused"), ("b", "cold-items", "pop")]


def test_reuse_of_a_file_that_is_not_the_suites_own_is_refused_before_measuring(tmp_path):
    import pytest

    evaluate_json = {"records": [{"dataset": "synthetic", "protocol": "temporal-loo", "method": "pop",
                                  "metrics": {"ndcg@10": 0.1}, "seed": 42}]}
    other_seed = {"suite": "quality", "records": [{"dataset": "synthetic", "protocol": "temporal-loo", "method": "pop",
                                                   "metrics": {"ndcg@10": 0.1}, "n_items": 40, "seed": 7}]}
    cases = [("evaluate.json", json.dumps(evaluate_json), "not a results file of the quality suite"),
             ("seed7.json", json.dumps(other_seed), "has seed 7, this run seed 42"),
             ("broken.json", "{not json", "not JSON")]
    for name, text, message in cases:
        (tmp_path / name).write_text(text)
        config = QualityConfig(protocols=("temporal-loo",), methods=("pop",), out_dir=tmp_path, name="new",
                               synthetic_users=40, reuse=(tmp_path / name,))
        with pytest.raises(ValueError, match=message):
            run_quality(config, progress=lambda *_: None)
        assert not (tmp_path / "new.json").exists()


def test_the_cold_target_bar_judges_against_a_random_order_of_the_unseen_items_when_the_record_has_it():
    def cold(metrics):
        return {"dataset": "d", "protocol": "cold-items", "method": "fused", "seed": 42, "n_items": 1000,
                "n_test_users": 10, "seconds": 0, "metrics": {"ndcg@10": 0.1}, "cold_metrics": metrics}

    [exact] = bar_checks([cold({"cold_hit@10": 0.5, "cold_random_hit@10": 0.04})])
    assert exact["value"] == pytest.approx(12.5) and "random order of the unseen items: 0.0400" in exact["bar"]
    [old] = bar_checks([cold({"cold_hit@10": 0.5})])  # a record from before it was kept: the 10 / items
    assert old["value"] == pytest.approx(50.0) and "10 / items" in old["bar"]
