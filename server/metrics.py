"""The gateway's Prometheus metrics and its structured (JSON-lines) request logging.

Every `GatewayMetrics` owns a private `CollectorRegistry`: the process-wide default registry would make
two gateways in one process (and every unit test) add to, or refuse to re-register, the same series.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The stages the gateway times (`time_stage` in server/), in the order reports list them. The load suite
# reads and reports `lmrec_gateway_stage_seconds` by this list (benchmarks/gateway_config.py imports it),
# and `observe_stage` takes any name, so a unit test keeps it equal to what server/ times.
STAGES = ("encode", "retrieve", "cf", "rank", "blend", "explain", "total")

# Log-ish spacing from 0.5 ms to 10 s, denser in the 5-250 ms range where a request's stages live,
# so percentiles there are not smeared across one wide bucket.
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.0075, 0.015, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
                 0.5, 1.0, 2.5, 10.0)

DEPLOY_RESULTS = ("ok", "refused", "failed")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._stage_seconds = Histogram(
            "lmrec_gateway_stage_seconds", "Seconds spent in one stage of a request.",
            ["method", "stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self._requests = Counter(
            "lmrec_gateway_requests", "Requests answered, by gRPC status name.",
            ["method", "code"], registry=self.registry)
        self._cache = Counter(
            "lmrec_gateway_user_vector_cache", "User-vector cache look-ups.",
            ["result"], registry=self.registry)
        self._candidate_cache = Counter(
            "lmrec_gateway_candidate_cache", "Look-ups of a returning user's cached candidates and features.",
            ["result"], registry=self.registry)
        self._answer_cache = Counter(
            "lmrec_gateway_answer_cache", "Look-ups of a returning user's last answer (same request, same state); "
            "a hit makes no user-vector look-up.",
            ["result"], registry=self.registry)
        self._fallbacks = Counter(
            "lmrec_gateway_fallbacks", "Requests served by a fallback path, by reason.",
            ["reason"], registry=self.registry)
        self._bundle_version = Gauge(
            "lmrec_gateway_bundle_version", "Version of the bundle being served.", registry=self.registry)
        self._deploys = Counter(
            "lmrec_gateway_deploys", "Bundle deploy attempts, by result.", ["result"], registry=self.registry)
        self._events = Counter(
            "lmrec_gateway_events", "Interaction events recorded.", registry=self.registry)
        self._added_items = Counter(
            "lmrec_gateway_added_items", "Items added to the live catalogue.", registry=self.registry)
        # Touch the fixed label sets so they are exported as 0 from the start: rate() and ratios in
        # dashboards need the series to exist before the first hit, miss or deploy.
        for result in ("hit", "miss"):
            self._cache.labels(result=result)
            self._candidate_cache.labels(result=result)
            self._answer_cache.labels(result=result)
        for result in DEPLOY_RESULTS:
            self._deploys.labels(result=result)
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    # -- request timing and outcome -----------------------------------------------------------

    def observe_stage(self, method: str, stage: str, seconds: float) -> None:
        self._stage_seconds.labels(method=method, stage=stage).observe(seconds)

    @contextmanager
    def time_stage(self, method: str, stage: str) -> Iterator[None]:
        # perf_counter, not time(): wall-clock jumps (NTP) must not produce negative or huge stages.
        start = time.perf_counter()
        try:
            yield
        finally:  # a failed stage still cost that time, and timeouts are what latency graphs are for
            self.observe_stage(method, stage, time.perf_counter() - start)

    def count_request(self, method: str, code: str) -> None:
        self._requests.labels(method=method, code=code).inc()

    # -- user-vector cache --------------------------------------------------------------------

    def cache_hit(self) -> None:
        self._cache.labels(result="hit").inc()

    def cache_miss(self) -> None:
        self._cache.labels(result="miss").inc()

    def candidate_cache(self, hit: bool) -> None:
        self._candidate_cache.labels(result="hit" if hit else "miss").inc()

    def answer_cache(self, hit: bool) -> None:
        self._answer_cache.labels(result="hit" if hit else "miss").inc()

    def cache_hit_ratio(self) -> float:
        """Share of profile vectors not computed again: user-vector cache hits, and answers served whole
        from the answer cache (which never look the vector up), over both."""
        answered = self.sample("lmrec_gateway_answer_cache_total", {"result": "hit"}) or 0.0
        hits = answered + (self.sample("lmrec_gateway_user_vector_cache_total", {"result": "hit"}) or 0.0)
        misses = self.sample("lmrec_gateway_user_vector_cache_total", {"result": "miss"}) or 0.0
        total = hits + misses
        return hits / total if total else 0.0

    # -- degradations, deploys, writes --------------------------------------------------------

    def fallback(self, reason: str) -> None:
        self._fallbacks.labels(reason=reason).inc()

    def set_bundle_version(self, version: int) -> None:
        self._bundle_version.set(version)

    def deploy(self, result: str) -> None:
        self._deploys.labels(result=result).inc()

    def events_recorded(self, n: int) -> None:
        self._events.inc(n)

    def items_added(self, n: int) -> None:
        self._added_items.inc(n)

    # -- reading and serving ------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def start_http_server(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics of this registry from a daemon thread; port 0 picks a free one. The bound port."""
        if self._http is not None:
            raise RuntimeError("metrics HTTP server already running; call stop_http_server() first")
        # Loopback by default: metrics name methods and versions and should not face the network
        # unless the operator says so.
        server, thread = prometheus_client.start_http_server(port, addr=host, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def stop_http_server(self) -> None:
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()  # release the port now, so a restart on the same port does not fail
        thread.join(timeout=5)


# -- structured logging -----------------------------------------------------------------------

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("lmrec_request_id", default="-")

# Incoming ids end up in every log line; anything beyond a plain token could forge fields or lines.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id(incoming: str | None = None) -> str:
    """The request id for this request (the caller's `x-request-id` when sane), set in `request_id_var`."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        request_id = incoming
    else:
        request_id = uuid.uuid4().hex[:16]
    request_id_var.set(request_id)
    return request_id


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; `extra={"fields": {...}}` is merged in (the fixed keys win)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({str(key): value for key, value in fields.items()})
        entry.update({
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        })
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a numpy scalar or a Path in `fields` must not turn a log call into an exception.
        return json.dumps(entry, default=str, ensure_ascii=False)


_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", json_format: bool = True) -> None:
    """Root logging to stderr; calling again reconfigures the same handler instead of adding one."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # A plain stderr handler set up before (the CLI's basicConfig) would print every line a second time.
    for other in [h for h in root.handlers if not getattr(h, "_lmrec_handler", False)
                  and type(h) is logging.StreamHandler and getattr(h, "stream", None) is sys.stderr]:
        root.removeHandler(other)
    handler = next((h for h in root.handlers if getattr(h, "_lmrec_handler", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._lmrec_handler = True  # type: ignore[attr-defined]  # marks ours among others' handlers
        root.addHandler(handler)
    handler.setFormatter(JsonLogFormatter() if json_format else logging.Formatter(_PLAIN_FORMAT))
