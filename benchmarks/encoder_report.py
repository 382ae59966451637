"""Encoder suite: the report. The Markdown (a table per path, ratios, arithmetic rate, bars, paths not
measured) and the PNG of sentences/s against batch size."""

from __future__ import annotations

import json
from pathlib import Path

from .encoder_config import ALL_PATHS
from .encoder_stats import bar_checks, best_over_concurrency, compute_efficiency, compute_ratios
from .machine import machine_facts
from .report import markdown_table, write_report


def write_results(payload: dict, out_dir: Path, name: str) -> list[Path]:
    payload = dict(payload)
    payload.setdefault("machine", machine_facts())
    if "bars" not in payload:
        payload["ratios"] = compute_ratios(payload.get("records", []))
        payload["efficiency"] = compute_efficiency(payload.get("records", []), payload.get("peaks"))
        payload["bars"] = bar_checks(payload)
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=lambda png: throughput_chart(payload.get("records", []), png,
                                                          device=_device_label(payload)))


def _device_label(payload: dict) -> str:
    if payload.get("config", {}).get("device") != "cuda":
        return "the CPU"
    return (payload.get("machine", {}).get("gpu") or {}).get("name", "the GPU")


def throughput_chart(records: list[dict], path: Path, device: str = "the CPU") -> Path:
    """Sentences/s against batch size, one line per path (served paths at their best concurrency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7.5, 4.5))
    batches = sorted({r["batch"] for r in records})
    for name in ALL_PATHS:
        points = [(b, best_over_concurrency(records, name, b)) for b in batches]
        points = [(b, r["sentences_per_s"]) for b, r in points if r]
        if not points:
            continue
        style = "-" if name.startswith("triton") else "--" if name.startswith("onnx") else ":"
        axis.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=name,
                  linewidth=2.4 if name == "triton-int8" else 1.4)
    axis.set_xscale("log", base=2)
    axis.set_xticks(batches or [1], [str(b) for b in batches] or ["1"])
    axis.set_xlabel("texts per request (batch)")
    axis.set_ylabel("sentences / s (served: best concurrency)")
    axis.set_title(f"Encoder throughput: all-MiniLM-L6-v2 on {device}", fontsize=10)
    axis.grid(alpha=0.3)
    if records:
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_markdown(payload: dict) -> str:
    machine = payload.get("machine", {})
    texts = payload.get("texts", {})
    lines = ["# Encoder suite", "",
             (f"Command: `{payload['command']}`  " if payload.get("command")
              else "Command: not recorded (run from Python); the suite's command is `lmrec bench encoder`  "),
             f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, "
             f"{' '.join(machine.get('simd_flags', []))}"
             + {True: "; denormals flushed while lmrec's encoder runs", False: "; denormals not flushed"}.get(
                 machine.get("encoder_flushes_denormals"), "")
             + (f"; ONNX Runtime on the CPU without {', '.join(machine['cpu_sessions_without_fusions'])}"
                if machine.get("cpu_sessions_without_fusions") else "") + "  ",
             *([f"Device: {_device_label(payload)} ({json.dumps(machine.get('gpu'))})  "]
               if payload.get("config", {}).get("device") == "cuda" else []),
             f"Rounds: {payload.get('rounds_done', 0)} of {payload.get('config', {}).get('rounds', '?')} "
             "(paths take turns; each cell is the median over rounds)  "]
    if texts:
        lines.append(f"Texts: {texts['n_texts']} from {texts['dataset']} ({texts['n_items']} item texts, "
                     f"{texts['n_profiles']} user profiles); tokens mean {texts['tokens']['mean']:.1f}, "
                     f"p95 {texts['tokens']['p95']:.0f}, max {texts['tokens']['max']}  ")
    arithmetic = payload.get("arithmetic")
    if arithmetic:
        lines.append(f"Arithmetic: {arithmetic['formula']}; {arithmetic['flops_per_sentence'] / 1e6:.0f} MFLOP per "
                     "sentence unpadded; achieved GFLOP/s count useful (unpadded) FLOPs  ")
    peaks = payload.get("peaks")
    if peaks:
        lines.append(f"GEMM peaks ({peaks['size']}³, best of the run): fp32 {peaks['fp32_gflops']:.1f} GFLOP/s, "
                     f"int8{' (torch._int_mm)' if peaks.get('device') == 'cuda' else ''} {peaks['int8_gops']:.1f} GOP/s"
                     + (f", fp16 {peaks['fp16_gflops']:.1f} GFLOP/s" if "fp16_gflops" in peaks else "") + "  ")
    lines.append("")
    records = payload.get("records", [])
    for path in ALL_PATHS:
        rows = [r for r in records if r["path"] == path]
        if not rows:
            continue
        lines += [f"## {path}", ""]
        lines += markdown_table(
            ["batch", "concurrency", "sentences/s", "p50 ms", "p95 ms", "p99 ms", "GFLOP/s", "requests"],
            [[r["batch"], r["concurrency"], f"{r['sentences_per_s']:.1f}", f"{r['latency_ms']['p50']:.1f}",
              f"{r['latency_ms']['p95']:.1f}", f"{r['latency_ms']['p99']:.1f}", f"{r['gflop_per_s']:.1f}",
              r["requests"]] for r in sorted(rows, key=lambda r: (r["batch"], r["concurrency"]))]) + [""]
    ratios = payload.get("ratios") or {}
    if ratios.get("triton_int8_vs_sentence_transformers"):
        lines += ["## triton-int8 (best concurrency) vs sentence-transformers", ""]
        lines += markdown_table(["batch", "triton concurrency", "triton-int8 sent/s", "sentence-transformers sent/s", "ratio"],
                                [[r["batch"], r["triton_concurrency"], f"{r['triton_int8']:.1f}",
                                  f"{r['sentence_transformers']:.1f}", f"{r['ratio']:.2f}×"]
                                 for r in ratios["triton_int8_vs_sentence_transformers"]]) + [""]
    if ratios.get("triton_int8_vs_infinity_emb"):
        lines += ["## triton-int8 vs infinity-emb (same batch, same concurrency)", ""]
        lines += markdown_table(["batch", "concurrency", "triton-int8 sent/s", "infinity-emb sent/s", "ratio"],
                                [[r["batch"], r["concurrency"], f"{r['triton_int8']:.1f}", f"{r['infinity_emb']:.1f}",
                                  f"{r['ratio']:.2f}×"] for r in ratios["triton_int8_vs_infinity_emb"]]) + [""]
    efficiency = (payload.get("efficiency") or {}).get("per_path")
    if efficiency:
        lines += ["## Arithmetic rate (best cell per path)", ""]
        lines += markdown_table(["path", "GFLOP/s", "batch", "concurrency", "share of int8 peak", "share of fp32 peak"],
                                [[p, f"{e['gflop_per_s']:.1f}", e["batch"], e["concurrency"],
                                  f"{e['share_of_int8_peak']:.0%}" if "share_of_int8_peak" in e else "–",
                                  f"{e['share_of_fp32_peak']:.0%}" if "share_of_fp32_peak" in e else "–"]
                                 for p, e in efficiency.items()]) + [""]
    if payload.get("bars"):
        lines += ["## Bars", ""]
        lines += markdown_table(["bar", "measured", "needed", "met"],
                                [[b["bar"], f"{b['value']:.3f}", f"{b['needed']:.2f}", "yes" if b["met"] else "NO"]
                                 for b in payload["bars"]]) + [""]
    if payload.get("errors"):
        lines += ["## Paths not measured", ""]
        for error in payload["errors"]:
            where = "".join(f" {k}={error[k]}" for k in ("batch", "concurrency", "round") if k in error)
            lines.append(f"- {error['path']}{where}: {error['error'].splitlines()[0][:300]}")
        lines.append("")
    for note in payload.get("notes", []):
        lines.append(f"Note: {note}  ")
    return "\n".join(lines)
