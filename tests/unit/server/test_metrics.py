"""Gateway metrics (private registry per instance, /metrics over HTTP) and JSON request logging."""

from __future__ import annotations

import contextvars
import json
import io
import logging
import sys
import urllib.request

import pytest

from lmrec.server.metrics import (
    GatewayMetrics,
    JsonLogFormatter,
    configure_logging,
    new_request_id,
    request_id_var,
)

ENCODE = {"method": "Recommend", "stage": "encode"}


def test_observe_stage_counts_and_sums_in_the_histogram():
    metrics = GatewayMetrics()
    assert metrics.sample("lmrec_gateway_stage_seconds_count", ENCODE) is None
    metrics.observe_stage("Recommend", "encode", 0.003)
    metrics.observe_stage("Recommend", "encode", 0.2)
    assert metrics.sample("lmrec_gateway_stage_seconds_count", ENCODE) == 2
    assert metrics.sample("lmrec_gateway_stage_seconds_sum", ENCODE) == pytest.approx(0.203)
    # 3 ms lands in the 4 ms bucket, 200 ms does not.
    assert metrics.sample("lmrec_gateway_stage_seconds_bucket", {**ENCODE, "le": "0.004"}) == 1
    assert metrics.sample("lmrec_gateway_stage_seconds_bucket", {**ENCODE, "le": "10.0"}) == 2


def test_time_stage_observes_also_when_the_block_raises():
    metrics = GatewayMetrics()
    with metrics.time_stage("Recommend", "encode"):
        pass
    with pytest.raises(RuntimeError):
        with metrics.time_stage("Recommend", "encode"):
            raise RuntimeError("triton down")
    assert metrics.sample("lmrec_gateway_stage_seconds_count", ENCODE) == 2
    assert metrics.sample("lmrec_gateway_stage_seconds_sum", ENCODE) >= 0.0


def test_requests_are_counted_per_method_and_code():
    metrics = GatewayMetrics()
    metrics.count_request("Recommend", "OK")
    metrics.count_request("Recommend", "OK")
    metrics.count_request("Recommend", "INVALID_ARGUMENT")
    assert metrics.sample("lmrec_gateway_requests_total", {"method": "Recommend", "code": "OK"}) == 2
    assert metrics.sample("lmrec_gateway_requests_total",
                          {"method": "Recommend", "code": "INVALID_ARGUMENT"}) == 1
    assert metrics.sample("lmrec_gateway_requests_total", {"method": "Similar", "code": "OK"}) is None


def test_cache_hit_ratio():
    metrics = GatewayMetrics()
    assert metrics.cache_hit_ratio() == 0.0
    for _ in range(3):
        metrics.cache_hit()
    metrics.cache_miss()
    assert metrics.cache_hit_ratio() == pytest.approx(0.75)
    assert metrics.sample("lmrec_gateway_user_vector_cache_total", {"result": "hit"}) == 3
    assert metrics.sample("lmrec_gateway_user_vector_cache_total", {"result": "miss"}) == 1
    for _ in range(4):  # answers served whole: no vector look-up, no vector computed
        metrics.answer_cache(True)
    metrics.answer_cache(False)  # a miss goes on to the vector cache, which counts it there
    assert metrics.cache_hit_ratio() == pytest.approx(7 / 8)
    assert metrics.sample("lmrec_gateway_user_vector_cache_total", {"result": "hit"}) == 3


def test_fallbacks_deploys_bundle_version_events_and_items():
    metrics = GatewayMetrics()
    metrics.fallback("encoder_unavailable")
    metrics.fallback("encoder_unavailable")
    metrics.fallback("deadline")
    metrics.set_bundle_version(3)
    metrics.deploy("ok")
    metrics.deploy("refused")
    metrics.events_recorded(5)
    metrics.events_recorded(2)
    metrics.items_added(4)
    assert metrics.sample("lmrec_gateway_fallbacks_total", {"reason": "encoder_unavailable"}) == 2
    assert metrics.sample("lmrec_gateway_fallbacks_total", {"reason": "deadline"}) == 1
    assert metrics.sample("lmrec_gateway_bundle_version") == 3
    assert metrics.sample("lmrec_gateway_deploys_total", {"result": "ok"}) == 1
    assert metrics.sample("lmrec_gateway_deploys_total", {"result": "refused"}) == 1
    assert metrics.sample("lmrec_gateway_deploys_total", {"result": "failed"}) == 0
    assert metrics.sample("lmrec_gateway_events_total") == 7
    assert metrics.sample("lmrec_gateway_added_items_total") == 4


def test_two_instances_do_not_share_counts():
    first, second = GatewayMetrics(), GatewayMetrics()
    first.count_request("Recommend", "OK")
    first.cache_hit()
    assert first.sample("lmrec_gateway_requests_total", {"method": "Recommend", "code": "OK"}) == 1
    assert second.sample("lmrec_gateway_requests_total", {"method": "Recommend", "code": "OK"}) is None
    assert second.cache_hit_ratio() == 0.0


def test_exposition_names_every_metric():
    metrics = GatewayMetrics()
    metrics.observe_stage("Recommend", "total", 0.01)
    metrics.count_request("Recommend", "OK")
    metrics.fallback("ranker_unavailable")
    text = metrics.exposition().decode()
    for name in ("lmrec_gateway_stage_seconds_bucket", "lmrec_gateway_requests_total",
                 "lmrec_gateway_user_vector_cache_total", "lmrec_gateway_fallbacks_total",
                 "lmrec_gateway_bundle_version", "lmrec_gateway_deploys_total",
                 "lmrec_gateway_events_total", "lmrec_gateway_added_items_total"):
        assert name in text, name
    assert 'lmrec_gateway_requests_total{code="OK",method="Recommend"} 1.0' in text


def test_http_server_serves_metrics_and_stops():
    metrics = GatewayMetrics()
    metrics.count_request("Recommend", "OK")
    port = metrics.start_http_server(0)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            assert response.status == 200
            body = response.read().decode()
        assert 'lmrec_gateway_requests_total{code="OK",method="Recommend"} 1.0' in body
    finally:
        metrics.stop_http_server()
    with pytest.raises(OSError):  # URLError is an OSError: nothing listens on the port any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
    metrics.stop_http_server()  # a second stop is harmless


def test_new_request_id_keeps_a_sane_id_and_replaces_a_bad_one():
    def run() -> None:
        assert new_request_id("abc-123_X.y") == "abc-123_X.y"
        assert request_id_var.get() == "abc-123_X.y"
        for bad in ("bad id with spaces", "a" * 200, "", "line\nbreak", "ok\n", None):
            fresh = new_request_id(bad)
            assert fresh != bad
            assert len(fresh) == 16 and all(c in "0123456789abcdef" for c in fresh)
            assert request_id_var.get() == fresh
        assert new_request_id("a" * 64) == "a" * 64
        assert new_request_id() != new_request_id()

    # In a copied context, so the id does not leak into the other tests' log lines.
    contextvars.copy_context().run(run)
    assert request_id_var.get() == "-"


def _record(message: str, *, fields: dict | None = None, exc_info=None) -> logging.LogRecord:
    logger = logging.getLogger("lmrec.test")
    extra = {"fields": fields} if fields is not None else None
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), exc_info, extra=extra)


def test_json_log_line_carries_request_id_and_extra_fields():
    def run() -> str:
        new_request_id("req-42")
        return JsonLogFormatter().format(_record("served", fields={"method": "Recommend", "k": 10}))

    line = contextvars.copy_context().run(run)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "served"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "lmrec.test"
    assert entry["request_id"] == "req-42"
    assert entry["method"] == "Recommend" and entry["k"] == 10
    assert entry["ts"].endswith("+00:00")


def test_json_log_line_without_request_has_default_id_and_exception_text():
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", exc_info=sys.exc_info())
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["request_id"] == "-"
    assert "ValueError: boom" in entry["exc"]
    # Fixed keys are not overridable from `fields`, and unserialisable values do not raise.
    entry = json.loads(JsonLogFormatter().format(_record("x", fields={"level": "FAKE", "obj": object()})))
    assert entry["level"] == "INFO"
    assert entry["obj"].startswith("<object object")


def test_configure_logging_is_idempotent():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("DEBUG")
        configure_logging("WARNING", json_format=False)
        ours = [h for h in root.handlers if h not in saved_handlers]
        assert len(ours) == 1
        assert root.level == logging.WARNING
        assert not isinstance(ours[0].formatter, JsonLogFormatter)
        configure_logging("INFO")
        assert isinstance(ours[0].formatter, JsonLogFormatter)
        assert len([h for h in root.handlers if h not in saved_handlers]) == 1
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_a_plain_stderr_handler_set_up_before_does_not_print_every_line_twice():
    import sys

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    plain = logging.StreamHandler(sys.stderr)  # what the CLI's logging.basicConfig installs
    kept = logging.StreamHandler(io.StringIO())  # someone else's handler, not on stderr: left alone
    try:
        root.handlers[:] = [plain, kept]
        configure_logging("INFO")
        assert plain not in root.handlers and kept in root.handlers
        assert [h for h in root.handlers if getattr(h, "_lmrec_handler", False)]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_the_stage_list_is_what_the_gateway_times_and_the_load_suite_reads():
    """`STAGES` once listed "profile" (never timed) and lacked "blend"; the load suite kept its own copy."""
    import re
    from pathlib import Path

    from lmrec.benchmarks import gateway_config
    from lmrec.server import metrics

    server = Path(metrics.__file__).resolve().parent
    timed = {stage for path in server.glob("*.py")
             for stage in re.findall(r'time_stage\([^,()]+,\s*"(\w+)"\)', path.read_text())}
    assert timed == set(metrics.STAGES) and len(metrics.STAGES) == len(timed)
    assert gateway_config.STAGES is metrics.STAGES
