"""A small run of the token-limit suite: every (precision, limit) measured on the session's export, each
limit in force while its texts are timed, and the report written; bad options named before any work."""

from __future__ import annotations

import json

import pytest

from lmrec.benchmarks.profile_length import (length_facts, main, measure_lengths, plot_rows, render_markdown,
                                             served_profile_texts, token_counts)


@pytest.fixture(scope="module")
def encoders(exported_encoder_dir):
    from lmrec.encoder import OnnxTextEncoder

    return {"fp32": OnnxTextEncoder(exported_encoder_dir, onnx_file="model.onnx", threads=1),
            "int8": OnnxTextEncoder(exported_encoder_dir, onnx_file="model_int8.onnx", threads=1)}


def test_every_precision_and_limit_is_measured_against_the_shortest(encoders, tiny_data_config, tmp_path):
    texts = served_profile_texts(tiny_data_config)
    assert texts and all(text for text in texts)
    counts = token_counts(encoders["fp32"], texts)
    facts = length_facts(counts, [16, 128])
    assert facts["max"] > 16  # the synthetic profiles (103 to 143 tokens) pass the short limit, so it cuts them
    assert facts["share_over"]["16"] == 1.0 > facts["share_over"]["128"] > 0
    rows = measure_lengths(encoders, texts[:12], [16, 64], rounds=2, singles=3)
    assert [(r["precision"], r["max_length"]) for r in rows] == [("fp32", 16), ("fp32", 64), ("int8", 16), ("int8", 64)]
    for row in rows:
        assert row["batch1_median_ms"] > 0 and row["batch32_texts_per_s"] > 0 and row["singles"] == 3
        assert len(row["batch1_ms_per_round"]) == 2 and len(row["batch32_seconds_per_round"]) == 2
    assert rows[0]["batch1_time_vs_shortest"] == 1.0 and rows[2]["batch32_rate_vs_shortest"] == 1.0
    # Each limit was in force while its texts were timed: 16 cuts every text, 64 cuts them at 64.
    assert [r["longest_encoded"] for r in rows] == [16, 64, 16, 64]
    payload = {"command": "python -m lmrec.benchmarks.profile_length", "dataset": "synthetic", "users": None,
               "machine": {"cpu_model": "cpu", "cores": 2}, "encoder": "export", "threads": 1, "rounds": 2,
               "token_counts": facts, "rows": rows}
    markdown = render_markdown(payload)
    assert "| fp32 | 64 | 64 |" in markdown and "100.0% over 16" in markdown and "every user with a history" in markdown
    assert plot_rows(rows, tmp_path / "plot.png").stat().st_size > 0
    json.dumps(payload)


@pytest.mark.parametrize("argv, message", [
    (["--max-lengths", "128,abc"], "'128,abc': expected token limits"),
    (["--max-lengths", "128,1024"], "within 8..512"),
    (["--rounds", "0"], "--rounds must be at least 1, got 0"),
    (["--users", "0"], "--users must be at least 1, got 0"),
])
def test_bad_options_are_named(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--out", str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_a_run_writes_its_report(exported_encoder_dir, tmp_path):
    main(["--dataset", "synthetic", "--users", "12", "--encoder-dir", str(exported_encoder_dir), "--max-lengths",
          "16,64", "--rounds", "1", "--singles", "2", "--threads", "1", "--out", str(tmp_path), "--name", "smoke"])
    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert payload["suite"] == "profile-length" and payload["token_counts"]["n_texts"] == 12
    assert {(r["precision"], r["max_length"]) for r in payload["rows"]} == {
        ("fp32", 16), ("fp32", 64), ("int8", 16), ("int8", 64)}
    assert "the first 12 users with a history" in (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").stat().st_size > 0


def test_a_movielens_run_without_its_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
    assert "--dataset ml-100k needs --data-dir" in capsys.readouterr().err


def test_an_encoder_folder_without_its_settings_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--encoder-dir", str(tmp_path), "--out", str(tmp_path)])
    assert "no encoder.json there" in capsys.readouterr().err
