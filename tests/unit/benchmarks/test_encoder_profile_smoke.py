"""A small run of the encoder profile: both served models profiled with ONNX Runtime's real profiler."""

from __future__ import annotations

import pytest

from lmrec.benchmarks.encoder_config import EncoderBenchConfig
from lmrec.benchmarks.encoder_profile import main, render_markdown, run_profile
from lmrec.export.loaders import SyntheticConfig


def test_both_models_are_profiled_and_their_shares_add_up(tmp_path, exported_encoder_dir):
    config = EncoderBenchConfig(n_texts=12, export_dir=exported_encoder_dir, work_dir=tmp_path / "work",
                                synthetic=SyntheticConfig(n_users=10, n_items=30, min_interactions=3, max_interactions=6))
    payload = run_profile(config, batch=4, passes=2, threads=1)
    int8, fp32 = payload["models"]
    assert int8["int8"] and not fp32["int8"]
    for model in (int8, fp32):
        assert sum(model["share"].values()) == pytest.approx(1.0) and sum(model["groups"].values()) == pytest.approx(1.0)
        assert model["texts_per_s"] > 0 and model["nodes_per_pass"] > 0
    # The int8 model's weight products are int8; its only fp32 MatMuls are attention's 12 activation products.
    assert int8["groups"]["int8 weight products"] > 0 and "attention's activation products" in int8["groups"]
    assert "MatMul" in fp32["share"] and not any(op.startswith("DynamicQuantize") for op in fp32["share"])
    assert not list((tmp_path / "work").glob("ort-profile-*.json"))  # the traces are removed
    markdown = render_markdown(payload)
    assert "## model_int8.onnx (int8" in markdown and "## model.onnx (fp32" in markdown


@pytest.mark.parametrize("argv, message", [(["--batch", "0"], "--batch must be at least 1, got 0"),
                                           (["--data-dir", "/no/such/dir"], "--data-dir /no/such/dir is not a directory")])
def test_bad_options_are_refused_by_name(capsys, argv, message):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
