"""Gateway load suite: what the servers count during a cell. The gateway's Prometheus /metrics (Recommend
stage histogram, user-vector and answer caches, fallbacks, status codes) and Triton's per-model counters, each scraped
before and after a cell and differenced; and the wait until Triton's backlog has drained."""

from __future__ import annotations

import time
import urllib.request

from .gateway_config import STAGES
from .gateway_processes import ServingPath


def scrape(metrics_url: str) -> dict:
    """The gateway's Recommend stage histogram sums/counts, cache look-ups, fallbacks and status counts."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out: dict[str, dict] = {"sum": {}, "count": {}, "cache": {}, "answers": {}, "fallbacks": {}, "requests": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.startswith("lmrec_gateway_stage_seconds") and labels.get("method") == "Recommend":
                if sample.name.endswith("_sum"):
                    out["sum"][labels["stage"]] = sample.value
                elif sample.name.endswith("_count"):
                    out["count"][labels["stage"]] = sample.value
            elif sample.name == "lmrec_gateway_user_vector_cache_total":
                out["cache"][labels["result"]] = sample.value
            elif sample.name == "lmrec_gateway_answer_cache_total":
                out["answers"][labels["result"]] = sample.value
            elif sample.name == "lmrec_gateway_fallbacks_total":
                out["fallbacks"][labels["reason"]] = sample.value
            elif sample.name == "lmrec_gateway_requests_total" and labels.get("method") == "Recommend":
                out["requests"][labels["code"]] = sample.value
    return out


def scrape_delta(before: dict, after: dict) -> dict:
    """Per stage: occurrences, seconds, mean per occurrence and per request (ms); cache and fallback deltas."""
    def diff(key):
        return {name: after[key].get(name, 0.0) - before[key].get(name, 0.0) for name in after[key]}

    sums, counts = diff("sum"), diff("count")
    n_requests = counts.get("total", 0.0)
    stages = {}
    for stage in sorted(counts, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        if counts[stage] <= 0:
            continue
        stages[stage] = {"count": int(counts[stage]), "seconds": sums.get(stage, 0.0),
                         "mean_ms": 1000 * sums.get(stage, 0.0) / counts[stage],
                         "per_request_ms": 1000 * sums.get(stage, 0.0) / n_requests if n_requests else None}
    return {"stages": stages,
            "cache": {k: int(v) for k, v in diff("cache").items()},
            "answers": {k: int(v) for k, v in diff("answers").items()},
            "fallbacks": {k: int(v) for k, v in diff("fallbacks").items() if v},
            "server_codes": {k: int(v) for k, v in diff("requests").items() if v}}


TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
                   "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_pending_request_count")


def scrape_triton(metrics_url: str) -> dict[str, dict[str, float]]:
    """Triton's per-model counters (summed over versions): requests, batches, queue and compute time."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Triton's counters have no `_total` suffix; the parser adds one to counter samples.
            name = sample.name[:-len("_total")] if sample.name.endswith("_total") else sample.name
            if name in TRITON_COUNTERS and "model" in sample.labels:
                model = out.setdefault(sample.labels["model"], {})
                model[name] = model.get(name, 0.0) + sample.value
    return out


def triton_delta(before: dict, after: dict) -> dict[str, dict]:
    """Per model: requests, executions, mean batch size, queue ms per request, compute ms per execution."""
    out = {}
    for model, values in after.items():
        d = {name: values.get(name, 0.0) - before.get(model, {}).get(name, 0.0) for name in TRITON_COUNTERS}
        requests, executions = d["nv_inference_request_success"], d["nv_inference_exec_count"]
        if requests <= 0:
            continue
        out[model] = {"requests": int(requests), "executions": int(executions),
                      "mean_batch": d["nv_inference_count"] / executions if executions else None,
                      "queue_ms": d["nv_inference_queue_duration_us"] / requests / 1000,
                      "infer_ms_per_execution": (d["nv_inference_compute_infer_duration_us"] / executions / 1000
                                                 if executions else None)}
    return out


def wait_until_idle(path: ServingPath, timeout_s: float) -> None:
    """Until Triton reports no pending request twice in a row (then a moment for the running batch)."""
    deadline, zeros = time.monotonic() + timeout_s, 0
    while zeros < 2:
        pending = sum(v.get("nv_inference_pending_request_count", 0.0)
                      for v in scrape_triton(path.triton_metrics_url).values())
        zeros = zeros + 1 if pending == 0 else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"[{path.name}] Triton still has {pending:.0f} pending requests after {timeout_s:.0f}s")
        time.sleep(0.1)
    time.sleep(0.2)
