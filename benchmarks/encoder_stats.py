"""Encoder suite: from measured cells to results. A cell's throughput, latency and FLOP/s, the median over
rounds, ratios between paths, arithmetic efficiency against the GEMM peaks, and the bars."""

from __future__ import annotations

import statistics

import numpy as np

from .encoder_config import ALL_PATHS, BASELINE_PATH, FP32_PATHS, INFINITY_PATH, INT8_PATHS
from .encoder_paths import CellResult
from .encoder_texts import Chunk


def _summarise(result: CellResult, chunks: list[Chunk]) -> dict:
    latencies_ms = np.asarray(result.latencies_s) * 1000.0
    sentences = sum(len(chunks[i].texts) for i in result.chunk_index)
    flops = sum(chunks[i].flops_padded for i in result.chunk_index)
    real = sum(chunks[i].flops_real for i in result.chunk_index)
    p50, p95, p99 = (float(v) for v in np.percentile(latencies_ms, [50, 95, 99]))
    return {"sentences_per_s": sentences / result.wall_s, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            # Useful work only: paths pad differently (length buckets, sorting), and padded FLOPs that a
            # path never executes would let it claim more than the machine's peak.
            "gflop_per_s": real / result.wall_s / 1e9, "padded_gflop_per_s": flops / result.wall_s / 1e9,
            "requests": len(result.latencies_s), "sentences": sentences, "seconds": result.wall_s}


def _median_record(path: str, batch: int, concurrency: int, rounds: list[dict]) -> dict:
    med = lambda key: float(statistics.median(r[key] for r in rounds))  # noqa: E731
    return {"path": path, "batch": batch, "concurrency": concurrency,
            "sentences_per_s": med("sentences_per_s"),
            "latency_ms": {"p50": med("p50_ms"), "p95": med("p95_ms"), "p99": med("p99_ms")},
            "gflop_per_s": med("gflop_per_s"), "padded_gflop_per_s": med("padded_gflop_per_s"),
            "requests": int(sum(r["requests"] for r in rounds)), "rounds": rounds}


def _cells(records: list[dict]) -> dict[tuple[str, int, int], dict]:
    return {(r["path"], r["batch"], r["concurrency"]): r for r in records}


def best_over_concurrency(records: list[dict], path: str, batch: int) -> dict | None:
    matching = [r for r in records if r["path"] == path and r["batch"] == batch]
    return max(matching, key=lambda r: r["sentences_per_s"]) if matching else None


def compute_ratios(records: list[dict]) -> dict:
    cells = _cells(records)
    batches = sorted({r["batch"] for r in records})
    vs_st, vs_inf, speedups = [], [], []
    for b in batches:
        st = cells.get((BASELINE_PATH, b, 1))
        triton = best_over_concurrency(records, "triton-int8", b)
        if st and triton:
            vs_st.append({"batch": b, "triton_concurrency": triton["concurrency"],
                          "triton_int8": triton["sentences_per_s"], "sentence_transformers": st["sentences_per_s"],
                          "ratio": triton["sentences_per_s"] / st["sentences_per_s"]})
        for r in records:
            if r["path"] == "triton-int8" and r["batch"] == b:
                peer = cells.get((INFINITY_PATH, b, r["concurrency"]))
                if peer:
                    vs_inf.append({"batch": b, "concurrency": r["concurrency"], "triton_int8": r["sentences_per_s"],
                                   "infinity_emb": peer["sentences_per_s"],
                                   "ratio": r["sentences_per_s"] / peer["sentences_per_s"]})
        if st:
            for path in ALL_PATHS:
                best = best_over_concurrency(records, path, b)
                if best and path != BASELINE_PATH:
                    speedups.append({"path": path, "batch": b, "concurrency": best["concurrency"],
                                     "ratio": best["sentences_per_s"] / st["sentences_per_s"]})
    return {"triton_int8_vs_sentence_transformers": vs_st, "triton_int8_vs_infinity_emb": vs_inf,
            "best_vs_sentence_transformers": speedups}


def compute_efficiency(records: list[dict], peaks: dict | None) -> dict:
    """Best achieved GFLOP/s (useful, unpadded FLOPs) per path, and against the measured GEMM peaks."""
    out: dict = {"per_path": {}}
    for path in ALL_PATHS:
        matching = [r for r in records if r["path"] == path]
        if matching:
            best = max(matching, key=lambda r: r["gflop_per_s"])
            out["per_path"][path] = {"gflop_per_s": best["gflop_per_s"], "batch": best["batch"],
                                     "concurrency": best["concurrency"]}
    if peaks:
        for kind, paths, peak in (("int8", INT8_PATHS, peaks.get("int8_gops")), ("fp32", FP32_PATHS, peaks.get("fp32_gflops"))):
            for path in paths:
                if path in out["per_path"] and peak:
                    out["per_path"][path][f"share_of_{kind}_peak"] = out["per_path"][path]["gflop_per_s"] / peak
            measured = [p for p in paths if p in out["per_path"]]
            if measured and peak:
                best = max(measured, key=lambda p: out["per_path"][p]["gflop_per_s"])
                out[kind] = {"path": best, "gflop_per_s": out["per_path"][best]["gflop_per_s"], "peak": peak,
                             "share": out["per_path"][best]["gflop_per_s"] / peak}
    return out


def bar_checks(payload: dict) -> list[dict]:
    records = payload.get("records", [])
    # The issue sets its bars for the 2-core CPU machine; a GPU run reports its figures without them.
    if not records or payload.get("config", {}).get("device", "cpu") != "cpu":
        return []
    checks = []
    batches = sorted({r["batch"] for r in records})
    bar_batch = 32 if 32 in batches else max(batches)
    ratios = payload.get("ratios") or compute_ratios(records)
    st = next((r for r in ratios["triton_int8_vs_sentence_transformers"] if r["batch"] == bar_batch), None)
    if st:
        checks.append({"bar": f"served int8 Triton ≥ 4× sentence-transformers (batch {bar_batch})",
                       "value": st["ratio"], "needed": 4.0})
    triton = best_over_concurrency(records, "triton-int8", bar_batch)
    peer = best_over_concurrency(records, INFINITY_PATH, bar_batch)
    if triton and peer:
        checks.append({"bar": f"served int8 Triton ≥ 1.5× infinity-emb (batch {bar_batch}, each at its best concurrency: "
                              f"{triton['concurrency']} vs {peer['concurrency']})",
                       "value": triton["sentences_per_s"] / peer["sentences_per_s"], "needed": 1.5})
    efficiency = payload.get("efficiency") or {}
    if "int8" in efficiency:
        e = efficiency["int8"]
        checks.append({"bar": f"int8 encoder ({e['path']}) ≥ 40% of the int8 GEMM peak", "value": e["share"],
                       "needed": 0.4})
    for check in checks:
        check["met"] = bool(check["value"] >= check["needed"])
    return checks


def _finish(payload: dict) -> None:
    payload["ratios"] = compute_ratios(payload["records"])
    payload["efficiency"] = compute_efficiency(payload["records"], payload.get("peaks"))
    payload["bars"] = bar_checks(payload)
