"""Gateway load suite: from samples to results. One record per cell, the maximum sustained throughput,
stage times pooled per path and population, lmrec / naive ratios, the bars, and a cell's progress line."""

from __future__ import annotations

from collections import Counter

from .gateway_config import (MAX_DEGRADED_SHARE, P99_OVER_P50_NEEDED, PARTS_RATIO_NEEDED, PATHS, POPULATIONS,
                             SCALE_RATIO_NEEDED, STAGES, block_part, parts_of)
from .gateway_loadgen import Samples


def _record(mode: str, path: str, population: str, samples: Samples, delta: dict, **extra) -> dict:
    return {"mode": mode, "path": path, "population": population, **extra, **samples.summary(),
            **({"max_send_lag_ms": 1000 * samples.max_lag} if mode == "open" else {}), **delta}


def no_op_summary(samples: Samples) -> dict:
    """An open-loop control cell of Health.Check calls: its percentiles, tail ratio and send lag."""
    summary = samples.summary()
    return {key: summary[key] for key in ("requests", "n_errors", "p50_ms", "p95_ms", "p99_ms")} | {
        "p99_over_p50": summary["p99_ms"] / summary["p50_ms"] if summary["p50_ms"] else None,
        "max_send_lag_ms": 1000 * samples.max_lag}


def _sustained(record: dict) -> bool:
    return record["n_errors"] == 0 and record["degraded"] <= MAX_DEGRADED_SHARE * max(record["ok"], 1)


def max_throughput(records: list[dict]) -> dict[str, dict]:
    """Per path/population: the best closed-loop throughput among sustained cells (else among all)."""
    out = {}
    for path in PATHS:
        for population in POPULATIONS:
            cells = [r for r in records if r["mode"] == "closed" and r["path"] == path
                     and r["population"] == population and r["ok"]]
            if not cells:
                continue
            good = [r for r in cells if _sustained(r)]
            best = max(good or cells, key=lambda r: r["throughput_rps"])
            out[f"{path}/{population}"] = {"throughput_rps": best["throughput_rps"],
                                           "concurrency": best["concurrency"], "sustained": bool(good)}
    return out


def stage_summary(records: list[dict]) -> dict[str, dict]:
    """Closed-loop stage times pooled per path/population: mean per occurrence and per request (ms)."""
    out = {}
    for path in PATHS:
        for population in POPULATIONS:
            cells = [r for r in records if r["mode"] == "closed" and r["path"] == path
                     and r["population"] == population]
            if not cells:
                continue
            seconds, counts = Counter(), Counter()
            for record in cells:
                for stage, value in record["stages"].items():
                    seconds[stage] += value["seconds"]
                    counts[stage] += value["count"]
            n_requests = counts.get("total", 0)
            out[f"{path}/{population}"] = {
                stage: {"count": counts[stage], "mean_ms": 1000 * seconds[stage] / counts[stage],
                        "per_request_ms": 1000 * seconds[stage] / n_requests if n_requests else None}
                for stage in STAGES if counts.get(stage)}
    return out


def ratios(records: list[dict]) -> list[dict]:
    """lmrec / naive per cell: throughput (higher is better) and p99 (lower is better)."""
    out = []
    for record in records:
        if record["path"] != "lmrec" or record["mode"] not in ("closed", "open"):
            continue
        key = "concurrency" if record["mode"] == "closed" else "share"
        other = next((r for r in records if r["path"] == "naive" and r["mode"] == record["mode"]
                      and r["population"] == record["population"] and r.get(key) == record.get(key)), None)
        if other is None:
            continue

        def ratio(a, b):
            return a / b if a is not None and b else None

        out.append({"mode": record["mode"], "population": record["population"], key: record[key],
                    "throughput_ratio": ratio(record["throughput_rps"], other["throughput_rps"]),
                    "p99_ratio": ratio(record["p99_ms"], other["p99_ms"]),
                    "p50_ratio": ratio(record["p50_ms"], other["p50_ms"])})
    return out


def ideal_queue_tail_ratio(load: float, servers: int = 1, n: int = 200_000, seed: int = 0) -> float | None:
    """p99/p50 of the time in system of an ideal M/D/c queue: Poisson arrivals at `load` (share of
    capacity), every request served in exactly the same time by one of `servers` servers.

    It is the floor of the tail ratio that the open-loop cells can show: with Poisson arrivals, requests
    queue behind each other even when serving never varies (M/D/1 at 70% load: about 4.3).
    """
    import heapq

    import numpy as np

    if load >= 1:
        return None  # at or past capacity the queue never settles: there is no steady-state tail
    if load <= 0:
        raise ValueError(f"load must be positive, got {load}")
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / (load * servers), n))
    free = [0.0] * servers
    in_system = np.empty(n)
    for i, arrival in enumerate(arrivals.tolist()):
        done = max(arrival, heapq.heappop(free)) + 1.0
        heapq.heappush(free, done)
        in_system[i] = done - arrival
    in_system = in_system[n // 10:]  # the queue starts empty: leave the warm-up out
    return float(np.percentile(in_system, 99) / np.percentile(in_system, 50))


# A queue that keeps up at 70% load has a median of a few service times (ideal M/D/1: under 2); a median
# this many times the one-in-flight one means the queue grew through the cell: the closed-loop maximum
# overstated what the gateway sustains under open-loop arrivals, and a growing queue's p99/p50 is small
# for the wrong reason (every request waits long), so the tail bar is not met there.
FELL_BEHIND_P50_FACTOR = 10.0


def bar_checks(payload: dict) -> list[dict]:
    records = payload.get("records", [])
    checks = []
    poisson = payload.get("config", {}).get("arrivals", "poisson") == "poisson"
    open_cached = [r for r in records if r["mode"] == "open" and r["path"] == "lmrec" and r["population"] == "cached"
                   and r["p50_ms"]]
    if open_cached:
        cell = min(open_cached, key=lambda r: abs(r["share"] - 0.7))
        value = cell["p99_ms"] / cell["p50_ms"]
        alone = next((r["p50_ms"] for r in records if r["mode"] == "closed" and r["path"] == "lmrec"
                      and r["population"] == "cached" and r["concurrency"] == 1 and r["p50_ms"]), None)
        behind = alone is not None and cell["p50_ms"] > FELL_BEHIND_P50_FACTOR * alone
        checks.append({"bar": f"cached users: p99 ≤ {P99_OVER_P50_NEEDED:g}× p50 at 70% of the maximum sustained "
                              f"throughput (open loop, {cell['share']:.0%} = {cell['rate_rps']:.1f} req/s)",
                       "value": value, "needed": P99_OVER_P50_NEEDED, "op": "<=",
                       "met": bool(value <= P99_OVER_P50_NEEDED and cell["n_errors"] == 0 and not behind),
                       "p50_ms": cell["p50_ms"], "p99_ms": cell["p99_ms"], "errors": cell["n_errors"],
                       **({"fell_behind": {"p50_ms": cell["p50_ms"], "one_in_flight_p50_ms": alone}} if behind else {}),
                       **({"no_op_rpc": cell["no_op_rpc"]} if cell.get("no_op_rpc") else {}),
                       # What an ideal single server (one event loop) and an ideal pair (2 cores) would show.
                       **({"ideal_md1": ideal_queue_tail_ratio(cell["share"], 1),
                           "ideal_md2": ideal_queue_tail_ratio(cell["share"], 2)} if poisson else {})})
    elif payload.get("records") is not None:  # said, rather than left out of the table
        why = ("no answered open-loop cell of cached users on the lmrec path"
               if "cached" in payload.get("config", {}).get("populations", POPULATIONS)
               else "the run left out the cached population (--populations)")
        checks.append({"bar": f"cached users: p99 ≤ {P99_OVER_P50_NEEDED:g}× p50 at 70% of the maximum sustained "
                              "throughput", "value": None, "needed": P99_OVER_P50_NEEDED, "op": "<=", "met": None,
                       "note": f"not measured: {why}"})
    parts = payload.get("parts")
    for population in POPULATIONS:
        paired = payload.get("paired", {}).get(population)
        cell = next((r for r in records if r["mode"] == "closed" and r["path"] == "lmrec"
                     and r["population"] == population and r["concurrency"] == 1 and r["p50_ms"]), None)
        if not paired and (cell is None or not parts):
            continue
        rtt = (parts or {}).get("grpc_health_rtt", {}).get("median_ms")
        if paired:  # Recommend and its parts measured request by request (results from before: the cell's p50)
            names, recommend, alone = list(paired["parts_ms"]), paired["recommend_ms"], paired["sum_parts_ms"]
            index_ms = paired["parts_ms"].get("index_query", 0.0)
        else:
            names = parts_of(population, "ranker" in parts)
            if not all(block_part(population, name) in parts for name in names):
                continue
            recommend, alone = cell["p50_ms"], sum(parts[block_part(population, name)]["median_ms"] for name in names)
            index_ms = parts["index_query"]["median_ms"]
        value = recommend / alone if alone else None
        # The issue names the parts (an index query, a ranker call); with a ranker the gateway's candidates
        # come from the fused model's signals, and it makes no index query.
        without_index = recommend / (alone - index_ms) if "ranker" in names and alone > index_ms else None
        checks.append({"bar": f"one request in flight ({population}): Recommend p50 ≤ {PARTS_RATIO_NEEDED:g}× the "
                              f"sum of its parts alone ({' + '.join(names)})",
                       "value": value, "needed": PARTS_RATIO_NEEDED, "op": "<=",
                       "met": None if value is None else bool(value <= PARTS_RATIO_NEEDED),
                       "recommend_p50_ms": recommend, "parts_ms": alone, "paired": bool(paired),
                       **({"without_index_query": without_index} if without_index is not None else {}),
                       **({"cell_ratio": cell["p50_ms"] / sum(parts[block_part(population, name)]["median_ms"]
                                                              for name in names)}
                          if paired and cell is not None and parts
                          and all(block_part(population, name) in parts for name in names) else {}),
                       "grpc_health_rtt_ms": rtt})
    scale = [r for r in records if r["mode"] == "scale" and r["p50_ms"]]
    sizes = sorted({r["n_items"] for r in scale})
    if len(sizes) < 2:
        checks.append({"bar": f"Recommend latency at 1M items ≤ {SCALE_RATIO_NEEDED:g}× that at 10k items",
                       "value": None, "needed": SCALE_RATIO_NEEDED, "op": "<=", "met": None,
                       "note": "not measured: run with --scale-items 10000,1000000 (pads the bundle with "
                               "synthetic items; the 1M-item index takes long to build)"})
    for population in POPULATIONS if len(sizes) >= 2 else ():
        small = next((r for r in scale if r["n_items"] == sizes[0] and r["population"] == population), None)
        large = next((r for r in scale if r["n_items"] == sizes[-1] and r["population"] == population), None)
        if small is None or large is None:
            continue
        value = large["p50_ms"] / small["p50_ms"]
        checks.append({"bar": f"Recommend latency ({population}, one in flight, p50) at {sizes[-1]:,} items ≤ "
                              f"{SCALE_RATIO_NEEDED:g}× that at {sizes[0]:,} items",
                       "value": value, "needed": SCALE_RATIO_NEEDED, "op": "<=",
                       "met": bool(value <= SCALE_RATIO_NEEDED and not small["n_errors"] and not large["n_errors"]),
                       "note": f"p50 {small['p50_ms']:.1f} → {large['p50_ms']:.1f} ms, p99 {small['p99_ms']:.1f} → "
                               f"{large['p99_ms']:.1f} ms"})
    return checks


def _where(record: dict) -> str:
    if record["mode"] == "closed":
        return f"N={record['concurrency']}"
    if record["mode"] == "scale":
        return f"{record['n_items']:,} items, N=1"
    return f"{record['share']:.0%} ({record['rate_rps']:.1f}/s)"


def _progress_line(record: dict) -> str:
    where = _where(record)
    latency = "no answers" if record["p50_ms"] is None else \
        f"p50 {record['p50_ms']:.1f} p95 {record['p95_ms']:.1f} p99 {record['p99_ms']:.1f} ms"
    return (f"[{record['mode']}] {record['population']:<14} {where:<16} {record['path']:<5}: "
            f"{record['throughput_rps']:.1f} req/s, {latency}, errors {record['n_errors']}, "
            f"degraded {record['degraded']}")
