"""A small smoke run of the quality suite: every file it promises, well-formed, on synthetic data."""

from __future__ import annotations

import json

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
        if record["protocol"] == "cold-items":
            assert "cold_hit@10" in record["cold_metrics"]
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
        return {"dataset": "d", "protocol": protocol, "method": method, "metrics": {"ndcg@10": ndcg}, "n_items": 100}

    bars = bar_checks([record("pop", 0.02), record("ease", 0.05), record("fused", 0.056),
                       record("lm-pretrained", 0.02), record("lm-finetuned", 0.031)])
    fused_bar = next(b for b in bars if b["bar"].startswith("fused ndcg@10"))
    assert "ease" in fused_bar["bar"] and abs(fused_bar["value"] - 1.12) < 1e-9 and fused_bar["met"]
    lm_bar = next(b for b in bars if b["bar"].startswith("lm-finetuned"))
    assert abs(lm_bar["value"] - 1.55) < 1e-9 and lm_bar["met"]
