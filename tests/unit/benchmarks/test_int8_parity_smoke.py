"""A small run of the int8 recipe comparison: every recipe measured (the served one as `export_encoder`
builds it, and the two routes not served), and the report written."""

from __future__ import annotations

import json

import pytest

from lmrec.benchmarks.int8_parity import BLOCKWISE, FUSED_ATTENTION, SERVED, main, measure_recipes
from lmrec.export.encoder_export import REDUCED_RANGE_PRESETS, pick_quantization_preset

TEXTS = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
         "A 24-year-old male technician. Recently liked: GoldenEye (1995) [Action, Adventure, Thriller].",
         "space opera", "Heat (1995). Genres: Action, Crime, Thriller."] * 3


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return measure_recipes(TEXTS, tmp_path_factory.mktemp("int8-recipes"), rounds=1)


def test_every_recipe_is_measured_against_fp32(rows):
    by = {row["recipe"]: row for row in rows}
    assert list(by) == ["fp32", "optimum preset", "lmrec, per-tensor", "lmrec, per-channel", SERVED,
                        FUSED_ATTENTION, BLOCKWISE]
    served, optimum = by[SERVED], by["optimum preset"]
    # MiniLM-L6 has 8 MatMuls per layer; lmrec keeps attention's two activation products in fp32.
    assert optimum["matmuls_quantised"] == 48 and served["matmuls_quantised"] == 36
    assert served["activation_matmuls"] == 12
    assert served["weights"] == ("s8, 7-bit" if pick_quantization_preset() in REDUCED_RANGE_PRESETS else "s8")
    for row in rows:
        assert 0.5 < row["mean_cosine"] <= 1.0001 and row["min_cosine"] <= row["mean_cosine"] + 1e-6
        assert row["texts_per_s"] > 0 and len(row["seconds_per_round"]) == 1
    assert served["speed_vs_optimum_preset"] == round(served["texts_per_s"] / optimum["texts_per_s"], 3)
    # The served recipe passes the export's int8 gate; one scale per matrix is far worse with 7-bit weights.
    assert served["min_cosine"] >= 0.96 and served["mean_cosine"] > by["lmrec, per-tensor"]["mean_cosine"]
    # Shrinking the activations' outlier channels brings the served model closer to fp32.
    unsmoothed = by["lmrec, per-channel"]
    assert served["outlier_smoothing"]["tensors_smoothed"] > 0 and unsmoothed["outlier_smoothing"] is None
    assert served["mean_cosine"] > unsmoothed["mean_cosine"]
    # The routes not served: attention fused into one QAttention per layer (MiniLM-L6 has six; each holds
    # the query, key and value products, so 36 weight products in int8 as in the served recipe), and 8-bit
    # weights with a scale per block of 32 inputs, which stay far closer to fp32 than one scale per channel.
    fused_attention, blockwise = by[FUSED_ATTENTION], by[BLOCKWISE]
    assert fused_attention["attention_fused"] == 6 and fused_attention["matmuls_quantised"] == 36
    assert fused_attention["min_cosine"] >= 0.96 and served["attention_fused"] == blockwise["attention_fused"] == 0
    assert blockwise["matmuls_quantised"] == 36 and blockwise["min_cosine"] >= 0.995


def test_the_report_is_written_with_its_command(tmp_path, monkeypatch, rows):
    import lmrec.benchmarks.int8_parity as suite

    monkeypatch.setattr(suite, "parity_texts", lambda data_dir: TEXTS)
    monkeypatch.setattr(suite, "measure_recipes", lambda texts, work: rows)  # measured by the fixture
    main(["--data-dir", str(tmp_path / "ml-100k"), "--out", str(tmp_path / "out")])
    payload = json.loads((tmp_path / "out" / "int8-parity.json").read_text())
    assert payload["command"].startswith("python -m lmrec.benchmarks.int8_parity --data-dir ")
    report = (tmp_path / "out" / "int8-parity.md").read_text()
    assert len(payload["recipes"]) == 7 and "optimum preset" in report and "activation tensors" in report and f"`{BLOCKWISE}`" in report
