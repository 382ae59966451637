"""The triton suite end to end on a tiny build: real Triton, real perf_analyzer, every promised file.

perf_analyzer needs libb64.so.0d and libcudart.so.12; when they are missing the test runs
benchmarks/peers/setup_perf_analyzer.sh first (root-free: `apt-get download` + `pip install --target`).
If perf_analyzer still cannot run the test fails on CI (CI=true) and is skipped elsewhere, with the reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from lmrec.benchmarks.triton_perf import (SETUP_SCRIPT, PerfAnalyzerError, TritonPerfConfig, add_arguments,
                                          config_from_args, find_perf_analyzer, parse_csv, run_triton_perf)
from lmrec.export.build import BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig, SyntheticConfig

from ...conftest import unavailable

TINY = SyntheticConfig(n_users=20, n_items=30, min_interactions=3, max_interactions=6)


@pytest.fixture(scope="module")
def perf_analyzer():
    try:
        return find_perf_analyzer()
    except PerfAnalyzerError as first:
        try:
            result = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as error:
            unavailable(f"{first}\n{SETUP_SCRIPT} could not run: {error}")
        if result.returncode != 0:
            unavailable(f"{first}\n{SETUP_SCRIPT} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        try:
            return find_perf_analyzer()
        except PerfAnalyzerError as second:
            unavailable(f"perf_analyzer still cannot run after {SETUP_SCRIPT}: {second}")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_triton_suite_smoke_run_writes_json_markdown_and_plot(tmp_path, perf_analyzer):
    build = build_bundle(BuildConfig(data=DataConfig(dataset="synthetic", synthetic=TINY), output_dir=tmp_path / "build"),
                         progress=lambda *_: None)
    config = TritonPerfConfig(
        build_dir=tmp_path / "build", models=("text_encoder",), batch_sizes=(1,), concurrency=(1, 2),
        measurement_mode="count_windows", measurement_request_count=15, measurement_ms=1000,
        stability_pct=100.0, max_trials=4, relaxed_stability_pct=400.0, out_dir=tmp_path / "results", name="smoke")
    lines = []
    payload = run_triton_perf(config, progress=lines.append)

    for suffix in ("json", "md", "png"):
        assert (tmp_path / "results" / f"smoke.{suffix}").is_file()
    assert (tmp_path / "results" / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert saved["records"] == json.loads(json.dumps(payload["records"]))
    assert not saved["failures"], saved["failures"]
    assert [(r["model"], r["batch"], r["concurrency"]) for r in saved["records"]] == [
        ("text_encoder", 1, 1), ("text_encoder", 1, 2)]
    for record in saved["records"]:
        assert record["infer_per_s"] > 0
        assert 0 < record["client_p50_ms"] <= record["client_p99_ms"]
        # The --verbose-csv server-side breakdown is parsed: compute infer is the model's own time.
        assert record["server_compute_infer_us"] > 0 and record["server_queue_us"] >= 0
        assert record["server_compute_us"] >= record["server_compute_infer_us"]
        assert 0.0 <= record["queue_share"] <= 1.0
        assert "-i grpc" in record["command"] and "--verbose-csv" in record["command"]
    assert "catalogue item texts" in saved["models"]["text_encoder"]["inputs"]
    assert saved["machine"]["cores"] >= 1 and saved["perf_analyzer"].startswith("Perf Analyzer")
    assert saved["command"].startswith("lmrec bench triton --build-dir ")
    markdown = (tmp_path / "results" / "smoke.md").read_text()
    assert "## text_encoder" in markdown and "queue share" in markdown and "lmrec bench triton" in markdown
    assert build.manifest.get("ranker") is None  # a plain build: the suite measured only the encoder


CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
request/response,response wait
2,40.9549,6,2551,12712,27,31275,578,3,40188,72758,94409,156520,9,47119
1,41.418,7,1629,2534,23,19425,429,3,20302,41131,47996,79489,10,24016
"""


def test_parse_csv_reads_percentiles_and_the_server_breakdown():
    records = parse_csv(CSV, model="text_encoder", batch=8)
    assert [r["concurrency"] for r in records] == [1, 2]
    first = records[0]
    assert first["infer_per_s"] == pytest.approx(41.418) and first["requests_per_s"] == pytest.approx(41.418 / 8)
    assert first["client_p50_ms"] == pytest.approx(20.302) and first["client_p99_ms"] == pytest.approx(79.489)
    assert first["server_queue_us"] == 2534 and first["server_compute_infer_us"] == 19425
    assert first["server_compute_us"] == 23 + 19425 + 429
    assert first["client_avg_ms"] == pytest.approx((7 + 1629 + 2534 + 23 + 19425 + 429 + 3) / 1000)
    assert first["queue_share"] == pytest.approx(2534 / (2534 + 23 + 19425 + 429))


def test_arguments_accept_lists_and_ranges_and_do_not_clash_with_a_shared_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="quality")  # as the `lmrec bench` parser already has
    parser.add_argument("--out", default="benchmarks/results")
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--build-dir", "build/x", "--concurrency", "1:8:1",
                                                 "--batch-sizes", "1,8", "--models", "text_encoder"]))
    assert config.concurrency == tuple(range(1, 9)) and config.batch_sizes == (1, 8)
    assert config.models == ("text_encoder",) and config.name == "triton" and str(config.build_dir) == "build/x"
    assert config_from_args(parser.parse_args([])).concurrency == (1, 2, 4, 8)


def test_a_config_sibling_model_is_measured_like_its_family():
    from lmrec.export.repository import model_family

    assert model_family("ranker") == "ranker" and model_family("ranker_0500378c") == "ranker"
    assert model_family("text_encoder_c240dfe7") == "text_encoder"
    assert model_family("ranker_v2") == "ranker_v2"  # not a config digest
