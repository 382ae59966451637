"""A small smoke run of the encoder suite: in-process paths and the real Triton, every promised file.

Triton is a dependency of the project (nvidia-pytriton): if it cannot start, the suite records an
error for the Triton path and this test fails (never skips). A missing infinity-emb venv is the one
error the suite is expected to record, and it must not stop the other paths.
"""

from __future__ import annotations

import json

import pytest

from lmrec.benchmarks.encoder import (EncoderBenchConfig, EncoderShape, expand_paths, flops_per_sequence,
                                      run_encoder_bench)
from lmrec.export.loaders import SyntheticConfig
from lmrec.ort_options import can_flush_denormals

PATHS = ("sentence-transformers", "onnx-fp32", "triton-int8")


def test_encoder_suite_smoke_run_writes_json_markdown_and_plot(tmp_path, exported_encoder_dir):
    config = EncoderBenchConfig(
        paths=PATHS + ("infinity-emb",), batch_sizes=(1, 4), concurrency=(1, 2), rounds=1, n_texts=16,
        synthetic=SyntheticConfig(n_users=20, n_items=30, min_interactions=3, max_interactions=6),
        export_dir=exported_encoder_dir, work_dir=tmp_path / "work", out_dir=tmp_path / "out", name="smoke",
        infinity_venv=tmp_path / "no-such-venv", min_seconds=0.2, min_requests=3, max_seconds=5.0,
        gemm_size=256, gemm_repeats=2,
    )
    payload = run_encoder_bench(config, progress=lambda *_: None)

    for suffix in ("json", "md", "png"):
        assert (tmp_path / "out" / f"smoke.{suffix}").is_file()
    assert (tmp_path / "out" / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "out" / "smoke.json").read_text())
    assert saved["machine"]["cores"] >= 1 and "onnxruntime" in saved["machine"]["packages"]
    assert saved["machine"]["encoder_flushes_denormals"] is can_flush_denormals()
    assert saved["machine"]["cpu_sessions_without_fusions"] == ["SkipLayerNormFusion"]

    # Only the peer without its venv is missing; Triton and the in-process paths all ran.
    assert saved["errors"] == [{"path": "infinity-emb", "error": "not installed: run benchmarks/peers/setup_infinity.sh"}]
    expected = {(p, b, c) for p in PATHS for b in (1, 4) for c in ((1, 2) if p.startswith("triton") else (1,))}
    assert {(r["path"], r["batch"], r["concurrency"]) for r in saved["records"]} == expected
    for record in saved["records"]:
        assert record["sentences_per_s"] > 0 and record["gflop_per_s"] > 0 and record["requests"] >= 3
        latency = record["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]

    assert saved["peaks"]["fp32_gflops"] > 0 and saved["peaks"]["int8_gops"] > 0
    assert saved["arithmetic"]["flops_per_sentence"] > 0
    assert saved["texts"]["n_texts"] == 16 and saved["texts"]["n_profiles"] == 8
    ratio = saved["ratios"]["triton_int8_vs_sentence_transformers"]
    assert [r["batch"] for r in ratio] == [1, 4] and all(r["ratio"] > 0 for r in ratio)
    assert any(b["bar"].startswith("served int8 Triton ≥ 4× sentence-transformers") for b in saved["bars"])
    assert "int8" in saved["efficiency"] and saved["efficiency"]["int8"]["share"] > 0
    assert "dynamic_batching" in saved["triton_configs"]["triton-int8"]

    markdown = (tmp_path / "out" / "smoke.md").read_text()
    assert "## triton-int8" in markdown and "lmrec bench encoder" in markdown and "## Bars" in markdown
    assert ("denormals flushed while lmrec's encoder runs" if can_flush_denormals() else "denormals not flushed") \
        in markdown
    assert "ONNX Runtime on the CPU without SkipLayerNormFusion" in markdown
    assert payload["records"] == saved["records"]


def test_flops_formula_matches_the_bert_layer_count():
    h, i, layers, n = 384, 1536, 6, 32
    by_hand = layers * (2 * n * (4 * h * h + 2 * h * i) + 2 * 2 * n * n * h)
    assert flops_per_sequence(n, EncoderShape(hidden=h, intermediate=i, layers=layers)) == by_hand
    assert flops_per_sequence(64) > 2 * flops_per_sequence(32)  # the attention term grows with n²


def test_path_groups_expand_and_unknown_paths_are_refused():
    assert expand_paths(["triton", "triton-int8"]) == ("triton-int8", "triton-fp32", "triton-int8-nobatch",
                                                       "triton-fp32-nobatch")
    with pytest.raises(ValueError, match="unknown encoder path"):
        expand_paths(["tensorrt"])


def _encoder_config(argv):
    import argparse

    from lmrec.benchmarks.encoder import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_the_suite_encodes_your_own_csv_data_sets_texts(own_csv_dataset):
    from lmrec.benchmarks.encoder_texts import _load_texts
    from lmrec.text import item_text_of

    folder, dataset, layout = own_csv_dataset
    config = _encoder_config(["--dataset", "csv", "--data-dir", str(folder), *layout, "--n-texts", "20"])
    assert config.csv.user == "uid" and config.csv.delimiter == ";"
    texts, kinds, label = _load_texts(config)
    assert label == "shop" and len(texts) == 20 and kinds.count("profile") == 10
    # The item texts are the catalogue's, read through the layout (titles and genres from items.csv).
    catalogue = {item_text_of(info) for info in dataset.items}
    assert {t for t, kind in zip(texts, kinds) if kind == "item"} <= catalogue


def test_own_data_for_the_encoder_suite_needs_a_folder_that_exists(tmp_path):
    from lmrec.cli import CliError

    with pytest.raises(CliError, match="--dataset csv needs --data-dir"):
        _encoder_config(["--dataset", "csv"])
    with pytest.raises(CliError, match=f"--data-dir {tmp_path / 'nope'} is not a directory"):
        _encoder_config(["--dataset", "csv", "--data-dir", str(tmp_path / "nope")])


@pytest.mark.parametrize("argv, message", [
    (["--csv", "user=uid"], "--dataset ml-100k has its own files"),
    (["--synthetic-users", "5", "--dataset", "csv"], "--synthetic-users replaces the data set"),
])
def test_encoder_data_options_that_would_be_ignored_are_refused(argv, message):
    from lmrec.cli import CliError

    with pytest.raises(CliError, match=message):
        _encoder_config(argv)


# --- --device cuda -------------------------------------------------------------------------------------------


def _has_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_a_gpu_run_reports_the_onnx_and_triton_paths_it_cannot_run_instead_of_measuring_the_cpu():
    from lmrec.benchmarks.encoder import _drop_paths_without_cuda

    errors: list = []
    paths = ("sentence-transformers", "onnx-fp32", "onnx-int8", "triton-int8", "triton-fp32", "infinity-emb")
    kept = _drop_paths_without_cuda(paths, errors, lambda *_: None)
    reasons = {e["path"]: e["error"] for e in errors}
    # int8 never runs on the GPU: ONNX Runtime's CUDA MatMulInteger takes no u8 activations.
    assert all("no CUDA kernel" in reasons[p] for p in ("onnx-int8", "triton-int8"))
    if _has_cuda_provider():  # a machine with onnxruntime-gpu runs the fp32 ones
        assert kept == ("sentence-transformers", "onnx-fp32", "triton-fp32", "infinity-emb")
        assert set(reasons) == {"onnx-int8", "triton-int8"}
        return
    assert kept == ("sentence-transformers", "infinity-emb")
    assert set(reasons) == {"onnx-fp32", "onnx-int8", "triton-int8", "triton-fp32"}
    assert all("no CUDAExecutionProvider" in reasons[p] and "onnxruntime-gpu" in reasons[p]
               for p in ("onnx-fp32", "triton-fp32"))
    # Paths that need no ONNX Runtime pass through untouched, with nothing recorded.
    errors.clear()
    assert _drop_paths_without_cuda(("sentence-transformers",), errors, lambda *_: None) == ("sentence-transformers",)
    assert errors == []


def test_sentence_transformers_alone_needs_no_export_and_truncates_where_the_model_does(tmp_path):
    from lmrec.benchmarks.encoder_texts import model_max_length
    from lmrec.export.encoder_export import default_model_path

    config = EncoderBenchConfig(
        paths=("sentence-transformers",), batch_sizes=(2,), concurrency=(1,), rounds=1, n_texts=8,
        synthetic=SyntheticConfig(n_users=10, n_items=30, min_interactions=3, max_interactions=6),
        work_dir=tmp_path / "work", out_dir=tmp_path / "out", name="st-only", min_seconds=0.05, min_requests=2,
        max_seconds=2.0, gemm_size=128, gemm_repeats=1,
    )
    payload = run_encoder_bench(config, progress=lambda *_: None)
    assert not (tmp_path / "work" / "export").exists()  # no ONNX export for a path that does not use one
    assert payload["errors"] == [] and [r["path"] for r in payload["records"]] == ["sentence-transformers"]
    assert payload["texts"]["max_length"] == model_max_length(default_model_path()) == 256
    assert payload["peaks"]["device"] == "cpu"
    with pytest.raises(FileNotFoundError, match="sentence_bert_config.json missing"):
        model_max_length(tmp_path)


def test_the_triton_repository_of_a_gpu_run_asks_for_gpu_instances(tmp_path, exported_encoder_dir):
    from lmrec.benchmarks.encoder_repository import prepare_export, write_triton_repository

    export = prepare_export(EncoderBenchConfig(export_dir=exported_encoder_dir, work_dir=tmp_path))
    configs = write_triton_repository(tmp_path / "triton", export, ["triton-int8", "triton-fp32-nobatch"], "KIND_GPU")
    for path, text in configs.items():
        assert "kind: KIND_GPU" in text and "KIND_CPU" not in text, path
    assert "dynamic_batching" in configs["triton-int8"] and "dynamic_batching" not in configs["triton-fp32-nobatch"]
    cpu = write_triton_repository(tmp_path / "triton-cpu", export, ["triton-int8"])
    assert "kind: KIND_CPU" in cpu["triton-int8"]


def test_a_gpu_run_is_not_judged_by_the_bars_set_for_the_cpu_machine():
    from lmrec.benchmarks.encoder_stats import bar_checks

    records = [{"path": p, "batch": 32, "concurrency": 1, "sentences_per_s": s, "gflop_per_s": 1.0}
               for p, s in (("sentence-transformers", 10.0), ("triton-int8", 50.0))]
    assert bar_checks({"records": records, "config": {"device": "cpu"}})  # the 4x bar, on the CPU
    assert bar_checks({"records": records, "config": {"device": "cuda"}}) == []


def test_infinity_on_a_gpu_is_asked_for_fp32_like_every_other_path(tmp_path):
    from lmrec.benchmarks.peers.infinity import InfinityServer

    cpu = InfinityServer(tmp_path, venv=tmp_path, port=1).command()
    cuda = InfinityServer(tmp_path, venv=tmp_path, port=1, device="cuda").command()
    assert "--dtype" not in cpu and cpu[cpu.index("--device") + 1] == "cpu"
    assert cuda[cuda.index("--dtype") + 1] == "float32" and cuda[cuda.index("--device") + 1] == "cuda"


def test_peaks_from_a_gpu_run_merge_their_fp16_figure_too():
    from lmrec.benchmarks.encoder_peaks import merge_peaks

    first = {"size": 8192, "device": "cuda", "fp32": {"torch_cuda_matmul": 50.0}, "fp16": {"torch_cuda_matmul": 700.0},
             "int8": {"torch_cuda_int_mm": 120.0}, "fp32_gflops": 50.0, "fp16_gflops": 700.0, "int8_gops": 120.0}
    second = {**first, "fp16": {"torch_cuda_matmul": 750.0}, "fp16_gflops": 750.0, "fp32_gflops": 49.0,
              "fp32": {"torch_cuda_matmul": 49.0}}
    merged = merge_peaks([first, second])
    assert merged["fp16_gflops"] == 750.0 and merged["fp16"] == {"torch_cuda_matmul": 750.0}
    assert merged["fp32_gflops"] == 50.0 and merged["measurements"] == 2


@pytest.mark.parametrize("device, message", [
    ("tpu", "--device tpu: expected one of cpu, cuda"),
    ("cuda", "--device cuda: torch sees no CUDA GPU"),
])
def test_a_device_the_machine_cannot_run_is_refused_by_name(device, message):
    import torch

    from lmrec.cli import CliError

    if device == "cuda" and torch.cuda.is_available():  # a GPU machine: valid here
        assert _encoder_config(["--synthetic-users", "5", "--device", device]).device == "cuda"
        return
    with pytest.raises(CliError, match=message):
        _encoder_config(["--synthetic-users", "5", "--device", device])
