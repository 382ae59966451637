"""Gateway load suite: the report. The Markdown (closed loop, open loop, catalogue size, Triton per cell,
time per stage, parts alone, bars) and the PNG (throughput and p99 against concurrency, time per stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .gateway_config import PATHS, POPULATIONS, SESSION_ITEMS, STAGES
from .gateway_stats import _where, ideal_queue_tail_ratio
from .report import markdown_table, write_report


def write_results(payload: dict, out_dir: Path, name: str, *, plot: bool = True) -> list[Path]:
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=(lambda png: chart(payload, png)) if plot else None)


def _fmt(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _errors(record: dict | None) -> str:
    if record is None:
        return "–"
    return ", ".join(f"{code} {n}" for code, n in sorted(record["errors"].items())) or "0"


def _population_notes(config: dict) -> list[str]:
    """What each population the run measured is (runs from before `populations` measured two)."""
    notes = {"cached": f"cached = {config['cached_users']} known users asking again",
             "uncached": f"uncached = anonymous sessions of {SESSION_ITEMS} random items",
             "known-uncached": "known-uncached = a random known user with one new item (their profile encoded)"}
    return [notes[name] for name in config.get("populations", ("cached", "uncached"))]


def render_markdown(payload: dict) -> str:
    machine, build, config = payload["machine"], payload.get("build", {}), payload["config"]
    records = payload.get("records", [])
    lines = ["# Gateway load suite", "",
             f"Reproduce: `{payload.get('reproduce') or 'lmrec bench gateway --build-dir build/ml-100k'}`  ",
             f"Command: `{payload.get('command') or '–'}`  ",
             f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['date']}; "
             f"{payload.get('seconds', 0):.0f} s in all.  ",
             f"Build: `{build.get('build_dir')}` bundle {build.get('bundle_version')} ({build.get('dataset')}, "
             f"{build.get('n_items')} items, {build.get('n_users')} users, encoder {build.get('precision')}"
             + (f" reading {build['max_length']} tokens" if build.get("max_length") else "") + ", "
             f"ranker {'yes' if build.get('ranker') else 'no'}).  ",
             f"Cells of {config['duration_s']:g} s, k={config['k']}, "
             + "".join(f"{what}, " for what in _population_notes(config))
             + "lmrec = hnswlib + user-vector, "
             "candidate and answer caches + dynamic batching; naive = exact retriever, no cache, no dynamic batching. Paths alternate cell by cell.",
             ""]

    def find(mode, path, population, key, value):
        return next((r for r in records if r["mode"] == mode and r["path"] == path and r["population"] == population
                     and r.get(key) == value), None)

    profiles = payload.get("profile_texts")
    if profiles:
        lines += ["Profile texts the encoder reads, median characters (from the warm-up's answers): "
                  + ", ".join(f"{name} {v['median_chars']:.0f} (of {v['n']})" for name, v in profiles.items())
                  + ".", ""]
    closed = [r for r in records if r["mode"] == "closed"]
    if closed:
        lines += ["## Closed loop (N workers back-to-back)", "",
                  "req/s counts full answers; degraded answers (CF only, after the encoder's 2 s budget ran out) "
                  "are counted apart and their latencies are in the percentiles.", ""]
        for population in POPULATIONS:
            levels = sorted({r["concurrency"] for r in closed if r["population"] == population})
            if not levels:
                continue
            rows = []
            for c in levels:
                a, b = find("closed", "lmrec", population, "concurrency", c), find("closed", "naive", population,
                                                                                    "concurrency", c)
                ratio = (a["throughput_rps"] / b["throughput_rps"]) if a and b and b["throughput_rps"] else None
                p99 = (a["p99_ms"] / b["p99_ms"]) if a and b and a["p99_ms"] and b["p99_ms"] else None
                rows.append([c, _fmt(a and a["throughput_rps"]), _fmt(b and b["throughput_rps"]), _fmt(ratio, ".2f"),
                             " / ".join(_fmt(a and a[p]) for p in ("p50_ms", "p95_ms", "p99_ms")),
                             " / ".join(_fmt(b and b[p]) for p in ("p50_ms", "p95_ms", "p99_ms")), _fmt(p99, ".2f"),
                             f"{_errors(a)} · {_errors(b)}",
                             f"{a['degraded'] if a else '–'} · {b['degraded'] if b else '–'}"])
            lines += [f"### {population}", ""]
            lines += markdown_table(["N", "lmrec req/s", "naive req/s", "ratio", "lmrec p50/p95/p99 ms",
                                     "naive p50/p95/p99 ms", "p99 ratio", "errors lmrec · naive",
                                     "degraded lmrec · naive"], rows) + [""]
        peaks = payload.get("max_throughput", {})
        if peaks:
            lines += ["Maximum sustained throughput (no errors, ≤ 1% degraded): " + "; ".join(
                f"{key} {v['throughput_rps']:.1f} req/s at N={v['concurrency']}"
                + ("" if v["sustained"] else " (not sustained)")
                for key, v in peaks.items()), ""]
    answered = [r for r in closed if r["path"] == "lmrec" and r["population"] == "cached" and "answers" in r]
    if answered:  # what "cached" measured: answers served whole, or the vector and candidate caches
        whole, ok = sum(r["answers"].get("hit", 0) for r in answered), sum(r["ok"] for r in answered)
        lines += [f"lmrec's cached requests answered whole from the answer cache: {whole:,} of {ok:,} "
                  "(the rest from the vector and candidate caches).", ""]
    opened = [r for r in records if r["mode"] == "open"]
    if opened:
        controlled = any(r.get("no_op_rpc") for r in opened)
        lines += [f"## Open loop ({config['arrivals']} arrivals; latency from the scheduled send time)", ""]
        # A Poisson schedule of a few seconds draws noticeably more or fewer sends than rate × duration: the
        # scheduled rate is what the cell was offered, and what its answers per second compare with.
        rows = [[r["population"], f"{r['share']:.0%}", f"{r['rate_rps']:.1f}",
                 _fmt(r["requests"] / r["duration_s"] if r.get("duration_s") else None), r["path"],
                 f"{r['throughput_rps']:.1f}",
                 f"{r.get('answered_rps', r['throughput_rps']):.1f}",
                 _fmt(r["p50_ms"]), _fmt(r["p95_ms"]), _fmt(r["p99_ms"]),
                 _fmt(r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else None, ".2f"),
                 _fmt(ideal_queue_tail_ratio(r["share"]) if config["arrivals"] == "poisson" else None, ".2f"),
                 *([_no_op_cell(r.get("no_op_rpc"))] if controlled else []),
                 _errors(r), r["degraded"],
                 _fmt(r.get("max_send_lag_ms"))] for r in opened]
        lines += markdown_table(["population", "share of own max", "offered req/s", "scheduled req/s", "path",
                                 "full answers/s",
                                 "all answers/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "M/D/1 p99/p50",
                                 *(["no-op RPC p50 / p99 ms, p99/p50, max send lag ms"] if controlled else []),
                                 "errors", "degraded", "max send lag ms"],
                                rows) + [""]
        if controlled:
            lines += ["No-op RPC: gRPC Health.Check to the same gateway under the same arrivals, just before or "
                      "after the cell (alternating): what the load generator, gRPC, the event loops and the shared "
                      "cores give without any recommender work.", ""]
    scaled = [r for r in records if r["mode"] == "scale"]
    if scaled:
        lines += ["## Catalogue size (bundle padded with synthetic items; lmrec path, one request in flight)", ""]
        rows = [[r["population"], f"{r['n_items']:,}", f"{r['throughput_rps']:.1f}", _fmt(r["p50_ms"]),
                 _fmt(r["p95_ms"]), _fmt(r["p99_ms"]), _errors(r), r["degraded"],
                 _fmt((r["stages"].get("retrieve") or {}).get("mean_ms"), ".2f"),
                 _fmt((r["stages"].get("blend") or {}).get("mean_ms"), ".2f"),
                 _fmt((r["stages"].get("total") or {}).get("mean_ms"), ".2f")]
                for r in sorted(scaled, key=lambda r: (r["population"], r["n_items"]))]
        lines += markdown_table(["population", "items", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "degraded",
                                 "retrieve ms", "blend ms", "handler total ms"], rows) + [""]
    triton_rows = []
    for r in records:
        for model, t in sorted(r.get("triton", {}).items()):
            where = _where(r)
            triton_rows.append([r["population"], where, r["path"], model, t["requests"], t["executions"],
                                _fmt(t["mean_batch"], ".2f"), _fmt(t["queue_ms"], ".2f"),
                                _fmt(t["infer_ms_per_execution"], ".2f"), _fmt(r.get("drain_s"), ".1f")])
    if triton_rows:
        lines += ["## Triton per cell (its own counters; backlog drained before the next cell)", ""]
        lines += markdown_table(["population", "cell", "path", "model", "requests", "executions", "mean batch",
                                 "queue ms/request", "compute ms/execution", "drain s"], triton_rows) + [""]
    stages = payload.get("stages", {})
    if stages:
        lines += ["## Time per stage (gateway histogram, closed-loop cells pooled; ms per request)", "",
                  "`blend` contains `retrieve`; `total` is the whole handler. Mean per occurrence in brackets "
                  "when a stage does not run on every request.", ""]
        rows = []
        for key, by_stage in stages.items():
            row = [key]
            for stage in STAGES:
                value = by_stage.get(stage)
                if value is None:
                    row.append("–")
                elif value["per_request_ms"] is not None and abs(value["per_request_ms"] - value["mean_ms"]) > 1e-3:
                    row.append(f"{value['per_request_ms']:.2f} ({value['mean_ms']:.2f})")
                else:
                    row.append(f"{value['mean_ms']:.2f}")
            rows.append(row)
        lines += markdown_table(["path/population", *STAGES], rows) + [""]
    parts = payload.get("parts", {})
    if parts:
        lines += ["## Unavoidable parts, each alone (median)", ""]
        lines += markdown_table(["part", "median ms", "p95 ms", "calls"],
                                [[name, f"{v['median_ms']:.3f}", f"{v['p95_ms']:.3f}", v["n"]]
                                 for name, v in parts.items()]) + [""]
    paired = payload.get("paired", {})
    if paired:
        lines += ["## Recommend and its parts, paired (one in flight; what bar 4b is judged on)", "",
                  "Each Recommend paired with its parts alone, measured right before or right after it (alternating; "
                  "uncached: the encode of a real profile text of the same population), so both see the same "
                  "machine; medians.", ""]
        lines += markdown_table(["population", "pairs", "Recommend ms", "parts ms", "sum of parts ms", "ratio",
                                 "median of pair ratios"],
                                [[name, v["n"], f"{v['recommend_ms']:.2f}",
                                  ", ".join(f"{part} {ms:.2f}" for part, ms in v["parts_ms"].items()),
                                  f"{v['sum_parts_ms']:.2f}", f"{v['ratio']:.2f}", _fmt(v.get("median_pair_ratio"), ".2f")]
                                 for name, v in paired.items()]) + [""]
    if payload.get("ratios"):
        lines += ["Ratios lmrec / naive are in the tables above and in `ratios` of the JSON.", ""]
    if payload.get("bars"):
        lines += ["## Bars", ""]
        lines += markdown_table(["bar", "measured", "needed", "met", "note"],
                                [[b["bar"], _fmt(b["value"], ".2f"), f"{b.get('op', '>=')} {b['needed']:g}",
                                  "–" if b["met"] is None else ("yes" if b["met"] else "NO"), _bar_note(b)]
                                 for b in payload["bars"]]) + [""]
    for note in payload.get("notes", []):
        lines.append(f"Note: {note}  ")
    return "\n".join(lines) + "\n"


def _bar_note(bar: dict) -> str:
    if bar.get("note"):
        return bar["note"]
    if "recommend_p50_ms" in bar:
        rtt = bar.get("grpc_health_rtt_ms")
        how = "paired request by request" if bar.get("paired") else "the N=1 cell against the parts' own block"
        cell = (f"; the N=1 cell against the parts' own block: {bar['cell_ratio']:.2f}"
                if bar.get("cell_ratio") is not None else "")
        if bar.get("without_index_query") is not None:
            cell += (f"; without the index query, which the fused path does not make: "
                     f"{bar['without_index_query']:.2f}")
        return (f"Recommend p50 {bar['recommend_p50_ms']:.2f} ms vs parts {bar['parts_ms']:.2f} ms ({how})"
                + (f"; a bare gRPC round trip: {rtt:.2f} ms" if rtt is not None else "") + cell)
    if "p50_ms" in bar:
        ideal = (f"; an ideal constant-time server under the same Poisson arrivals: {bar['ideal_md1']:.2f} (M/D/1), "
                 f"{bar['ideal_md2']:.2f} (M/D/2)") if bar.get("ideal_md1") is not None else ""
        behind = bar.get("fell_behind")
        behind = (f"; fell behind: p50 {behind['p50_ms']:.1f} ms is {behind['p50_ms'] / behind['one_in_flight_p50_ms']:.0f}× "
                  f"the one-in-flight p50 ({behind['one_in_flight_p50_ms']:.1f} ms), so the queue grew through the "
                  "cell and its p99/p50 says nothing of the tail") if behind else ""
        no_op = bar.get("no_op_rpc")
        if no_op and no_op.get("p99_over_p50"):
            no_op = (f"; a no-op RPC (Health.Check) under the same arrivals: {no_op['p99_over_p50']:.2f} (p50 "
                     f"{no_op['p50_ms']:.1f} ms, p99 {no_op['p99_ms']:.1f} ms, errors {no_op['n_errors']}, send lag "
                     f"up to {no_op['max_send_lag_ms']:.1f} ms)")
        elif no_op:
            no_op = f"; the no-op RPC control got no answers ({no_op['n_errors']} errors)"
        else:
            no_op = ""
        return f"p50 {bar['p50_ms']:.1f} ms, p99 {bar['p99_ms']:.1f} ms, errors {bar['errors']}{ideal}{no_op}{behind}"
    return ""


def _no_op_cell(no_op: dict | None) -> str:
    if not no_op:
        return "–"
    if not no_op.get("p50_ms"):
        return f"no answers ({no_op['n_errors']} errors)"
    errors = f", {no_op['n_errors']} errors" if no_op["n_errors"] else ""
    return (f"{no_op['p50_ms']:.1f} / {no_op['p99_ms']:.1f}, {_fmt(no_op.get('p99_over_p50'), '.2f')}, "
            f"{no_op['max_send_lag_ms']:.1f}{errors}")


def chart(payload: dict, path: Path) -> Path:
    """Throughput and p99 vs concurrency (lmrec vs naive, every population) and the stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in payload.get("records", []) if r["mode"] == "closed"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"lmrec": "-", "naive": "--"}
    colors = {"cached": "#1f77b4", "uncached": "#d62728", "known-uncached": "#9467bd"}
    for population in POPULATIONS:
        for name in PATHS:
            cells = sorted((r for r in records if r["path"] == name and r["population"] == population),
                           key=lambda r: r["concurrency"])
            if not cells:
                continue
            x = [r["concurrency"] for r in cells]
            axes[0].plot(x, [r["throughput_rps"] for r in cells], styles[name], marker="o", color=colors[population],
                         label=f"{name} · {population}")
            axes[1].plot(x, [r["p99_ms"] if r["p99_ms"] is not None else np.nan for r in cells], styles[name],
                         marker="o", color=colors[population], label=f"{name} · {population}")
    levels = sorted({r["concurrency"] for r in records})
    for axis, title, label in ((axes[0], "closed-loop throughput", "req/s"), (axes[1], "closed-loop p99", "ms")):
        axis.set_xscale("log", base=2)
        if levels:
            axis.set_xticks(levels, [str(level) for level in levels])
            axis.minorticks_off()
        axis.set_xlabel("concurrency (requests in flight)")
        axis.set_ylabel(label)
        axis.set_title(title, fontsize=10)
        if axis.has_data():
            axis.legend(fontsize=7)
    axes[1].set_yscale("log")
    stages = payload.get("stages", {})
    keys = list(stages)
    pieces = ("encode", "retrieve", "blend−retrieve", "cf", "rank", "explain", "other")
    piece_colors = ("#d62728", "#2ca02c", "#98df8a", "#9467bd", "#8c564b", "#ff7f0e", "#c7c7c7")
    bottoms = np.zeros(len(keys))
    for piece, color in zip(pieces, piece_colors):
        values = np.array([_stage_piece(stages[key], piece) for key in keys]) if keys else np.zeros(0)
        axes[2].bar(range(len(keys)), values, bottom=bottoms, color=color, label=piece)
        bottoms += values
    axes[2].set_xticks(range(len(keys)), keys, rotation=20, ha="right", fontsize=8)
    axes[2].set_ylabel("ms per request (gateway histogram)")
    axes[2].set_title("time per stage, closed-loop cells pooled", fontsize=10)
    if keys:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stage_piece(by_stage: dict, piece: str) -> float:
    def per_request(stage):
        value = by_stage.get(stage)
        return (value["per_request_ms"] or 0.0) if value else 0.0

    if piece == "blend−retrieve":
        return max(per_request("blend") - per_request("retrieve"), 0.0)
    if piece == "other":
        inner = sum(per_request(s) for s in ("encode", "blend", "cf", "rank", "explain"))
        return max(per_request("total") - inner, 0.0)
    return per_request(piece)
