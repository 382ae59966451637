"""Gateway load suite: the real gateway process, the real Triton, gRPC Recommend under load.

`lmrec bench gateway --build-dir build/ml-100k` → benchmarks/results/gateway.{json,md,png}. The build
folder is built first when it holds no bundle (`--dataset`, `--data-dir`; the data set defaults to the
folder's name, read from ../shared/data/<name>).

Two serving paths run side by side, each a Triton plus an `lmrec gateway` process on free ports:

* `lmrec`: the gateway as shipped (hnswlib retriever, user-vector cache, Triton's dynamic batching).
* `naive`: `--retriever exact --no-user-cache` against a second Triton whose models have dynamic
  batching switched off. Its build folder is a copy of the model repository (files hard-linked) whose
  `config.pbtxt` files are the build's own with the `dynamic_batching` field deleted (a
  `max_queue_delay_microseconds: 0` would still batch whatever is queued), plus a link to the same
  bundles. The gateway loads models with its repository config as the override, so the naive gateway
  must read this copy.

Every measurement alternates the two paths cell by cell (the first path of a cell alternates too), so
slow drifts of the machine hit both alike. Two request populations:

* `cached`: a small fixed set of known users (`cached_users`), each requested once before measuring,
  so the lmrec gateway answers them from its user-vector cache (no Triton call).
* `uncached`: anonymous sessions, each with 3 random `recent_item_ids`: the profile is encoded by
  Triton on every request.

Measurements:

1. Closed loop: for each concurrency N, N asyncio workers on one gRPC channel send Recommend
   back-to-back for `duration_s`. Throughput = full (non-degraded) answers / wall time; latency
   p50/p95/p99 over every answer; errors counted by gRPC status; degraded answers (CF only: the encoder
   missed its 2 s budget) counted separately.
2. Open loop: requests launched on a Poisson schedule (`arrivals="fixed"`: evenly spaced) at
   `open_loop_shares` of each path's own maximum sustained closed-loop throughput for that population
   (sustained: no errors, ≤ 1% degraded), so both paths are compared at the same utilisation (at the
   lmrec path's rates the naive one would only queue up and degrade). Latency runs from the *scheduled*
   send time, so a late launch or a queue is charged to the request (no coordinated omission).
3. Time per stage from the gateway's own Prometheus histogram `lmrec_gateway_stage_seconds{method=
   "Recommend",stage}`: scraped before and after each cell, `_sum`/`_count` differenced. Per stage the
   mean per occurrence and the mean per request (Δsum / Δcount of `total`). `blend` contains `retrieve`.
   Triton's own counters are differenced too (requests, executions → mean batch size, queue time).
   A cell ends only once Triton has no pending request: the gateway abandons an encoder call after its
   2 s budget, but Triton still runs it, and such a backlog must not slow the next cell (`drain_s`).
4. Unavoidable parts, each alone: one Triton text_encoder call for a real profile text (tritonclient,
   the lmrec Triton), one hnswlib query of 200 neighbours on the bundle's index, one ranker call when
   the bundle has one. Bar 4b compares them with concurrency-1 Recommend p50 (cached: index + ranker;
   uncached: + encode). A gRPC health round trip is recorded alongside, outside the sum.
5. Catalogue size (bar 5, "Recommend latency at 1M items ≤ 2× that at 10k items"), only with
   `scale_items` (e.g. `--scale-items 10000,1000000`): `scale_bundle` pads the build's bundle with
   synthetic items up to each size (embeddings drawn around real ones: a random real vector plus
   Gaussian noise of 0.5× the real per-dimension std, re-normalised; ALS factors and popularity zero;
   titles "Synthetic item N" with the anchor item's categories and year) into a build folder of its own
   with a rebuilt hnswlib index and a valid manifest, kept under `scale_dir` and reused by later runs.
   One lmrec path per size, all up at once; closed loop at concurrency 1, sizes alternating; bar 5 is
   p50 at the largest size over p50 at the smallest, per population. Without `scale_items` the bar is
   reported with value None. Bundles with a fusion ranker cannot be padded (the ranker's pickled model
   knows its items) and are refused.

The load generator shares the machine with the gateway and Triton: on few cores its own CPU use is part
of what limits throughput. `machine` in the JSON records the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .machine import machine_facts
from .report import markdown_table, write_report

PATHS = ("lmrec", "naive")
POPULATIONS = ("cached", "uncached")
STAGES = ("encode", "retrieve", "cf", "rank", "blend", "explain", "total")
DATASETS_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SESSION_ITEMS = 3
P99_OVER_P50_NEEDED = 3.0
PARTS_RATIO_NEEDED = 1.5
SCALE_RATIO_NEEDED = 2.0
MAX_DEGRADED_SHARE = 0.01  # a cell counts as sustained with no errors and at most this share degraded


@dataclass(frozen=True, kw_only=True)
class GatewayLoadConfig:
    build_dir: Path
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    duration_s: float = 10.0
    open_loop_shares: tuple[float, ...] = (0.25, 0.5, 0.7, 0.9)
    k: int = 10
    naive: bool = True
    out_dir: Path = Path("benchmarks/results")
    name: str = "gateway"
    seed: int = 42
    # Used only when build_dir holds no bundle yet: what to build it from.
    dataset: str | None = None  # None: the build folder's name (build/ml-100k → ml-100k)
    data_dir: Path | None = None  # None: ../shared/data/<dataset>
    cached_users: int = 16
    arrivals: str = "poisson"  # open-loop schedule: "poisson" or "fixed"
    warmup_s: float = 1.0  # unrecorded closed-loop traffic per path and population before measuring
    parts_repeats: int = 200  # calls per unavoidable part measured alone (median)
    timeout_s: float = 10.0  # client deadline per Recommend
    startup_timeout_s: float = 180.0
    # Bar 5: catalogue sizes to pad the bundle to (e.g. (10_000, 1_000_000)); () skips the scale phase.
    scale_items: tuple[int, ...] = ()
    scale_dir: Path | None = None  # where padded builds are kept (reused); None: <build_dir>-scaled/


# ---------------------------------------------------------------------------------------- processes


class ManagedProcess:
    """A subprocess in its own session whose output goes to a file, so a failure can show what it said."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def lmrec_command() -> list[str]:
    script = Path(sys.executable).parent / "lmrec"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from lmrec.cli import main; sys.exit(main())"]


def wait_for_gateway(address: str, metrics_url: str, process: ManagedProcess, timeout_s: float) -> None:
    """Health SERVING and /metrics answering; fails at once with the log if the process dies."""
    from lmrec.client import ClientError, RecommenderClient

    deadline = time.monotonic() + timeout_s
    with RecommenderClient(address, timeout_s=1.0) as client:
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"gateway exited with code {process.process.returncode}:\n{process.log()}")
            try:
                if client.health() == "SERVING":
                    urllib.request.urlopen(metrics_url, timeout=2).read()
                    return
            except (ClientError, urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
    raise RuntimeError(f"gateway not SERVING after {timeout_s:.0f}s:\n{process.log()}")


def without_dynamic_batching(config_text: str) -> str:
    """A model's config.pbtxt with dynamic batching off (the field deleted, not a zero delay)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from lmrec.export.triton_config import render_config

    config = text_format.Parse(config_text, mc.ModelConfig())
    config.ClearField("dynamic_batching")
    return render_config(config)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def naive_build_dir(build_dir: Path, out: Path) -> Path:
    """A build folder serving the same bundles with every model's dynamic batching off."""
    from lmrec.export.repository import BUNDLES_DIR, REPOSITORY_DIR

    build_dir = Path(build_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLES_DIR).symlink_to(build_dir / BUNDLES_DIR, target_is_directory=True)
    for model_dir in sorted((build_dir / REPOSITORY_DIR).iterdir()):
        if not (model_dir / "config.pbtxt").is_file():
            continue
        target = out / REPOSITORY_DIR / model_dir.name
        target.mkdir(parents=True)
        for version in model_dir.iterdir():
            if version.is_dir() and version.name.isdigit():
                shutil.copytree(version, target / version.name, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns("__pycache__"))
        (target / "config.pbtxt").write_text(without_dynamic_batching((model_dir / "config.pbtxt").read_text()))
    return out


@dataclass
class ServingPath:
    name: str
    build_dir: Path
    address: str
    metrics_url: str
    triton: object  # TritonProcess
    gateway: ManagedProcess

    @property
    def triton_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.triton.metrics_port}/metrics"


def start_path(name: str, build_dir: Path, work: Path, config: GatewayLoadConfig, stack: contextlib.ExitStack,
               *, progress=print) -> ServingPath:
    """Triton + gateway for one path; both are registered on `stack` to be stopped whatever happens."""
    from lmrec.server.triton_launcher import TritonConfig, TritonProcess, free_port, models_in_repository

    naive = name == "naive"
    serve_dir = naive_build_dir(build_dir, work / "naive-build") if naive else Path(build_dir)
    repository = serve_dir / "model_repository"
    started = time.perf_counter()
    triton = TritonProcess(TritonConfig(repository=repository, models=models_in_repository(repository),
                                        startup_timeout_s=config.startup_timeout_s))
    stack.callback(triton.stop)
    triton.start()
    port, metrics_port = free_port(), free_port()
    args = [*lmrec_command(), "gateway", "--build-dir", str(serve_dir), "--triton-url", triton.grpc_url,
            "--port", str(port), "--metrics-port", str(metrics_port), "--state-dir", str(work / f"{name}-state")]
    if naive:
        args += ["--retriever", "exact", "--no-user-cache"]
    gateway = ManagedProcess(args, work / f"{name}-gateway.log")
    stack.callback(gateway.stop)
    address, metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for_gateway(address, metrics_url, gateway, config.startup_timeout_s)
    progress(f"[{name}] Triton {triton.grpc_url} + gateway {address} ready in {time.perf_counter() - started:.1f}s")
    return ServingPath(name=name, build_dir=serve_dir, address=address, metrics_url=metrics_url, triton=triton,
                       gateway=gateway)


def check_alive(path: ServingPath) -> None:
    if not path.gateway.alive():
        code = path.gateway.process.returncode
        raise RuntimeError(f"[{path.name}] gateway died (code {code}):\n{path.gateway.log()}")
    if not path.triton.is_running():
        raise RuntimeError(f"[{path.name}] Triton died:\n{path.triton.log_tail()}")


# ------------------------------------------------------------------------------------------ metrics


def scrape(metrics_url: str) -> dict:
    """The gateway's Recommend stage histogram sums/counts, cache look-ups, fallbacks and status counts."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out: dict[str, dict] = {"sum": {}, "count": {}, "cache": {}, "fallbacks": {}, "requests": {}}
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
            "fallbacks": {k: int(v) for k, v in diff("fallbacks").items() if v},
            "server_codes": {k: int(v) for k, v in diff("requests").items() if v}}


# ------------------------------------------------------------------------------------------- load


class Population:
    """What one request of a population asks for; `request(worker, n)` → Recommend keyword arguments."""

    def __init__(self, name: str, users: list[str], item_ids: list[str], seed: int) -> None:
        self.name = name
        self.users = users
        self.item_ids = item_ids
        self.seed = seed
        self._rngs: dict[int, random.Random] = {}

    def request(self, worker: int, n: int) -> dict:
        if self.name == "cached":
            return {"user_id": self.users[n % len(self.users)]}
        rng = self._rngs.get(worker)
        if rng is None:
            rng = self._rngs[worker] = random.Random(self.seed * 1_000_003 + worker)
        return {"recent_item_ids": rng.sample(self.item_ids, SESSION_ITEMS)}


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    errors: Counter = field(default_factory=Counter)  # gRPC status name → count
    degraded: int = 0
    elapsed: float = 0.0
    max_lag: float = 0.0  # open loop: worst delay of a launch behind its schedule

    def summary(self) -> dict:
        ok = len(self.latencies)
        rate = (lambda n: n / self.elapsed if self.elapsed > 0 else 0.0)  # noqa: E731
        # Throughput counts full answers only; a degraded answer (CF only, after the encoder's deadline
        # passed) is an answer, and its latency is in the percentiles, but it is not the service asked for.
        out = {"requests": ok + sum(self.errors.values()), "ok": ok, "errors": dict(self.errors),
               "n_errors": sum(self.errors.values()), "degraded": self.degraded,
               "duration_s": round(self.elapsed, 3), "throughput_rps": rate(ok - self.degraded),
               "answered_rps": rate(ok)}
        if ok:
            ms = np.asarray(self.latencies) * 1000
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            out.update(p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), mean_ms=float(ms.mean()),
                       max_ms=float(ms.max()))
        else:
            out.update(p50_ms=None, p95_ms=None, p99_ms=None, mean_ms=None, max_ms=None)
        return out


async def _send(client, kwargs: dict, k: int, samples: Samples, since: float) -> None:
    from lmrec.client import ClientError

    try:
        response = await client.recommend(k=k, **kwargs)
    except ClientError as error:
        samples.errors[error.code] += 1
        return
    samples.latencies.append(time.perf_counter() - since)
    samples.degraded += bool(response.degraded)


async def closed_loop(address: str, population: Population, concurrency: int, duration_s: float, *, k: int,
                      timeout_s: float) -> Samples:
    from lmrec.client import AsyncRecommenderClient

    samples = Samples()
    async with AsyncRecommenderClient(address, timeout_s=timeout_s) as client:
        await client.health()  # the channel is connected before the clock starts
        started = time.perf_counter()
        end = started + duration_s

        async def worker(w: int) -> None:
            n = w
            while time.perf_counter() < end:
                await _send(client, population.request(w, n), k, samples, time.perf_counter())
                n += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        samples.elapsed = time.perf_counter() - started
    return samples


def arrival_offsets(rate: float, duration_s: float, arrivals: str, seed: int) -> list[float]:
    """Scheduled send times (seconds from the start) for `rate` requests per second over `duration_s`."""
    if rate <= 0:
        return []
    if arrivals == "fixed":
        return [n / rate for n in range(int(rate * duration_s))]
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be 'poisson' or 'fixed', got {arrivals!r}")
    rng, offsets, t = random.Random(seed), [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return offsets
        offsets.append(t)


async def open_loop(address: str, population: Population, rate: float, duration_s: float, *, k: int,
                    timeout_s: float, arrivals: str, seed: int) -> Samples:
    """Launch on schedule regardless of completions; latency counts from the scheduled time."""
    from lmrec.client import AsyncRecommenderClient

    samples = Samples()
    offsets = arrival_offsets(rate, duration_s, arrivals, seed)
    async with AsyncRecommenderClient(address, timeout_s=timeout_s) as client:
        await client.health()
        started = time.perf_counter() + 0.01
        tasks = []
        for n, offset in enumerate(offsets):
            scheduled = started + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            samples.max_lag = max(samples.max_lag, time.perf_counter() - scheduled)
            tasks.append(asyncio.create_task(_send(client, population.request(0, n), k, samples, scheduled)))
        await asyncio.gather(*tasks)
        # Rate over the schedule's span: completions after it are latency, not extra throughput.
        samples.elapsed = max(duration_s, 1e-9)
    return samples


def measure(path: ServingPath, load, *args, drain_timeout_s: float = 600.0, **kwargs) -> tuple[Samples, dict]:
    """`load(path.address, *args, **kwargs)` between metric scrapes: (samples, deltas).

    The gateway gives up on an encoder call after its budget, but Triton still runs it: after an overload
    Triton keeps a backlog that would slow the next cell. So the cell ends only when Triton has no pending
    request (`drain_s`); Triton's own counters are read after that, charging the backlog to this cell.
    """
    check_alive(path)
    before, triton_before = scrape(path.metrics_url), scrape_triton(path.triton_metrics_url)
    samples = asyncio.run(load(path.address, *args, **kwargs))
    after = scrape(path.metrics_url)
    drained = time.perf_counter()
    wait_until_idle(path, drain_timeout_s)
    delta = scrape_delta(before, after)
    delta["drain_s"] = round(time.perf_counter() - drained, 3)
    delta["triton"] = triton_delta(triton_before, scrape_triton(path.triton_metrics_url))
    check_alive(path)
    return samples, delta


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


# ------------------------------------------------------------------------------ parts measured alone


def _median_ms(fn, repeats: int) -> dict:
    fn()  # first call: connections, page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "n": repeats}


def measure_parts(path: ServingPath, bundle, texts: dict[str, list[str]], cached_users: list[str],
                  repeats: int) -> dict:
    """Each unavoidable part of a Recommend alone: encode (Triton), index query, ranker call; gRPC RTT."""
    import tritonclient.grpc as grpcclient

    from lmrec.client import RecommenderClient

    triton = grpcclient.InferenceServerClient(path.triton.grpc_url)
    uncached_texts = texts["uncached"] or texts["cached"]
    turn = {"n": 0}

    def encode(text: str) -> np.ndarray:
        data = np.array([[text.encode("utf-8")]], dtype=object)
        tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        result = triton.infer(bundle.encoder_model, [tensor], model_version=str(bundle.encoder_version))
        return result.as_numpy("EMBEDDING")[0]

    def encode_next() -> None:
        turn["n"] += 1
        encode(uncached_texts[turn["n"] % len(uncached_texts)])

    parts = {"encode": _median_ms(encode_next, repeats)}
    vectors = [encode(text) for text in (texts["cached"] + uncached_texts)[:32]]
    turn["n"] = 0

    def search() -> None:
        turn["n"] += 1
        bundle.retriever.search(vectors[turn["n"] % len(vectors)], 200)

    parts["index_query"] = _median_ms(search, repeats * 5)
    if bundle.ranker_model is not None:
        features = _ranker_features(bundle, cached_users[0], vectors[0])

        def rank() -> None:
            tensor = grpcclient.InferInput("FEATURES", list(features.shape), "FP32")
            tensor.set_data_from_numpy(features)
            triton.infer(bundle.ranker_model, [tensor], model_version=str(bundle.ranker_version))

        parts["ranker"] = {**_median_ms(rank, repeats), "rows": int(len(features))}
    with RecommenderClient(path.address, timeout_s=5.0) as client:
        parts["grpc_health_rtt"] = _median_ms(client.health, repeats)
    triton.close()
    return parts


def _ranker_features(bundle, user_id: str, profile: np.ndarray) -> np.ndarray:
    """One user's real candidate feature rows as the gateway builds them (random rows if that fails)."""
    dataset = bundle.dataset
    try:
        user = list(dataset.user_ids).index(user_id)
        mask = dataset.interactions.user == user
        order = np.argsort(dataset.interactions.timestamp[mask], kind="stable")
        history = dataset.interactions.item[mask][order].astype(np.int64)
        _, features, _ = bundle.fused.features(np.array([user]), [history], profile=profile[None, :],
                                               excluded=[history])
        return np.ascontiguousarray(features[0], np.float32)
    except Exception:  # the part is a ranker call; its rows' values do not change its cost
        n_features = int(bundle.manifest["ranker"]["n_features"])
        return np.random.default_rng(0).standard_normal((300, n_features)).astype(np.float32)


# ------------------------------------------------------------------------------ catalogue size (bar 5)

SCALE_NOISE = 0.5  # synthetic item noise per dimension, in units of the real embeddings' std
SCALE_CHUNK = 100_000


def _scaled_embeddings(real: np.ndarray, n_extra: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n_extra` unit vectors, each a random real vector plus Gaussian noise (and the anchors' rows)."""
    rng = np.random.default_rng(seed)
    scale = (SCALE_NOISE * real.std(axis=0)).astype(np.float32)
    anchors = rng.integers(0, len(real), n_extra)
    out = np.empty((n_extra, real.shape[1]), np.float32)
    for start in range(0, n_extra, SCALE_CHUNK):
        stop = min(start + SCALE_CHUNK, n_extra)
        block = real[anchors[start:stop]] + rng.standard_normal((stop - start, real.shape[1]), np.float32) * scale
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, anchors


def scale_bundle(build_dir: Path, n_items: int, out_dir: Path, *, seed: int = 42, progress=print) -> Path:
    """A build folder serving the build's latest bundle padded with synthetic items to `n_items` items.

    The model repository is shared (hard links), so the encoder and its checksums are the build's; the
    bundle gets the padded catalogue, embeddings, zero ALS factors and popularity for the new items, a
    rebuilt hnswlib index (the build's M / ef settings) and a manifest naming its origin. A folder that
    already holds the same padding of the same bundle is reused as it is.
    """
    import dataclasses

    from lmrec.export.dataset import ItemInfo
    from lmrec.export.index_build import IndexConfig, build_index
    from lmrec.export.repository import BUNDLES_DIR, REPOSITORY_DIR, publish_bundle, stage_bundle
    from lmrec.export.snapshot import load_snapshot, save_snapshot
    from lmrec.server.bundle import complete_versions, verify_bundle

    build_dir, out_dir = Path(build_dir).resolve(), Path(out_dir)
    versions = complete_versions(build_dir)
    if not versions:
        raise FileNotFoundError(f"no complete bundle under {build_dir / BUNDLES_DIR}")
    version = versions[-1]
    manifest = verify_bundle(build_dir, version)
    if manifest.get("ranker"):
        raise ValueError(f"bundle {version} of {build_dir} has a fusion ranker: its pickled model knows its items, "
                         "so it cannot be padded with synthetic ones (scale a build made without --fused)")
    n_real = int(manifest["n_items"])
    if n_items < n_real:
        raise ValueError(f"cannot scale {build_dir} ({n_real} items) down to {n_items} items")
    origin = {"build_dir": str(build_dir), "version": version, "created": manifest["created"],
              "n_real_items": n_real, "n_items": n_items, "seed": seed, "noise_scale": SCALE_NOISE}
    if complete_versions(out_dir):
        existing = json.loads((out_dir / BUNDLES_DIR / str(version) / "manifest.json").read_text()) \
            if (out_dir / BUNDLES_DIR / str(version) / "manifest.json").is_file() else {}
        if existing.get("scaled_from") == origin:
            verify_bundle(out_dir, version)
            return out_dir
        raise FileExistsError(f"{out_dir} holds another build; remove it or pick another scale folder")
    started = time.perf_counter()
    source = build_dir / BUNDLES_DIR / str(version)
    progress(f"padding bundle {version} of {build_dir} from {n_real:,} to {n_items:,} items in {out_dir} ...")
    shutil.rmtree(out_dir / REPOSITORY_DIR, ignore_errors=True)
    shutil.copytree(build_dir / REPOSITORY_DIR, out_dir / REPOSITORY_DIR, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    staged = stage_bundle(out_dir, version)

    real = np.load(source / "item_embeddings.npy")
    extra, anchors = _scaled_embeddings(real, n_items - n_real, seed)
    embeddings = np.concatenate([real, extra])
    del extra
    dataset = load_snapshot(source)
    new_ids = tuple(f"synthetic-{n}" for n in range(n_items - n_real))
    taken = set(dataset.item_ids).intersection(new_ids)
    if taken:
        raise ValueError(f"the catalogue already uses ids like {sorted(taken)[0]!r}")
    anchor_items = [dataset.items[a] for a in anchors.tolist()]
    new_items = tuple(ItemInfo(title=f"Synthetic item {n}", categories=anchor.categories, year=anchor.year)
                      for n, anchor in enumerate(anchor_items))
    padded = dataclasses.replace(dataset, item_ids=dataset.item_ids + new_ids, items=dataset.items + new_items)
    save_snapshot(padded, staged)
    np.save(staged / "item_embeddings.npy", embeddings)
    cf = dict(np.load(source / "cf.npz"))
    n_extra = n_items - n_real
    cf["item_factors"] = np.concatenate([cf["item_factors"], np.zeros((n_extra, cf["item_factors"].shape[1]),
                                                                      cf["item_factors"].dtype)])
    cf["popularity"] = np.concatenate([cf["popularity"], np.zeros(n_extra, cf["popularity"].dtype)])
    np.savez(staged / "cf.npz", **cf)
    index = manifest["index"]
    progress(f"  building the hnswlib index over {n_items:,} items (M={index['m']}, "
             f"ef_construction={index['ef_construction']}) ...")
    meta = build_index(embeddings, list(padded.item_ids), staged, encoder_checksum=index["encoder_checksum"],
                       encoder_version=index["encoder_version"],
                       config=IndexConfig(m=index["m"], ef_construction=index["ef_construction"],
                                          ef_search=index["ef_search"], threads=os.cpu_count() or 1))
    new_manifest = {k: v for k, v in manifest.items() if k not in ("files", "version", "created")}
    new_manifest.update(n_items=n_items, index={k: v for k, v in meta.items() if k != "item_ids"},
                        scaled_from=origin)
    publish_bundle(out_dir, staged, version, new_manifest)
    verify_bundle(out_dir, version)
    progress(f"  padded bundle ready in {time.perf_counter() - started:.0f}s")
    return out_dir


def measure_scale(config: GatewayLoadConfig, build_dir: Path, work: Path, populations: dict, users: list[str],
                  *, progress=print, on_record=None) -> list[dict]:
    """Closed loop at concurrency 1 on the bundle padded to each size, sizes alternating per cell."""
    from lmrec.client import RecommenderClient

    sizes = sorted(set(config.scale_items))
    folder = Path(config.scale_dir) if config.scale_dir else build_dir.parent / f"{build_dir.name}-scaled"
    builds = {n: scale_bundle(build_dir, n, folder / str(n), seed=config.seed, progress=progress) for n in sizes}
    records = []
    with contextlib.ExitStack() as stack:
        paths = {}
        for n in sizes:
            paths[n] = start_path(f"lmrec@{n}", builds[n], work, config, stack, progress=progress)
            with RecommenderClient(paths[n].address, timeout_s=60.0) as client:
                for user in users:
                    client.recommend(user, k=config.k)
            for population in populations.values():
                asyncio.run(closed_loop(paths[n].address, population, 1, config.warmup_s, k=config.k,
                                        timeout_s=config.timeout_s))
            wait_until_idle(paths[n], 600.0)
        for turn, population in enumerate(POPULATIONS):
            for n in (sizes if turn % 2 == 0 else sizes[::-1]):
                samples, delta = measure(paths[n], closed_loop, populations[population], 1, config.duration_s,
                                         k=config.k, timeout_s=config.timeout_s)
                record = _record("scale", "lmrec", population, samples, delta, concurrency=1, n_items=n)
                records.append(record)
                progress(_progress_line(record))
                if on_record:
                    on_record(record)
    return records


# ---------------------------------------------------------------------------------------------- run


def ensure_build(config: GatewayLoadConfig, *, progress=print) -> Path:
    from lmrec.server.bundle import complete_versions

    build_dir = Path(config.build_dir)
    if complete_versions(build_dir):
        return build_dir
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.loaders import DataConfig

    dataset = config.dataset or build_dir.name
    if dataset == "synthetic":
        data = DataConfig(dataset="synthetic")
    else:
        data_dir = Path(config.data_dir) if config.data_dir else DATASETS_ROOT / dataset
        if not data_dir.is_dir():
            raise FileNotFoundError(f"{build_dir} has no bundle and {data_dir} does not exist: give --data-dir, "
                                    f"or build first (lmrec build --dataset {dataset} --data-dir DIR)")
        data = DataConfig(dataset=dataset, data_dir=data_dir)
    progress(f"{build_dir} has no bundle: building it from {dataset} first")
    build_bundle(BuildConfig(data=data, output_dir=build_dir), progress=progress)
    return build_dir


def _config_json(config: GatewayLoadConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()}


def reproduce_command(config: GatewayLoadConfig) -> str:
    defaults = GatewayLoadConfig(build_dir=config.build_dir)
    parts = ["lmrec bench gateway", f"--build-dir {config.build_dir}"]
    if config.concurrency != defaults.concurrency:
        parts.append(f"--concurrency {','.join(str(c) for c in config.concurrency)}")
    if config.duration_s != defaults.duration_s:
        parts.append(f"--duration {config.duration_s:g}")
    if config.open_loop_shares != defaults.open_loop_shares:
        parts.append(f"--open-loop-shares {','.join(f'{s:g}' for s in config.open_loop_shares)}")
    if config.k != defaults.k:
        parts.append(f"-k {config.k}")
    if not config.naive:
        parts.append("--no-naive")
    if config.seed != defaults.seed:
        parts.append(f"--seed {config.seed}")
    if config.scale_items:
        parts.append(f"--scale-items {','.join(str(n) for n in config.scale_items)}")
    return " ".join(parts)


def _record(mode: str, path: str, population: str, samples: Samples, delta: dict, **extra) -> dict:
    return {"mode": mode, "path": path, "population": population, **extra, **samples.summary(),
            **({"max_send_lag_ms": 1000 * samples.max_lag} if mode == "open" else {}), **delta}


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


def bar_checks(payload: dict) -> list[dict]:
    records = payload.get("records", [])
    checks = []
    open_cached = [r for r in records if r["mode"] == "open" and r["path"] == "lmrec" and r["population"] == "cached"
                   and r["p50_ms"]]
    if open_cached:
        cell = min(open_cached, key=lambda r: abs(r["share"] - 0.7))
        value = cell["p99_ms"] / cell["p50_ms"]
        checks.append({"bar": f"cached users: p99 ≤ {P99_OVER_P50_NEEDED:g}× p50 at 70% of the maximum sustained "
                              f"throughput (open loop, {cell['share']:.0%} = {cell['rate_rps']:.1f} req/s)",
                       "value": value, "needed": P99_OVER_P50_NEEDED, "op": "<=",
                       "met": bool(value <= P99_OVER_P50_NEEDED and cell["n_errors"] == 0),
                       "p50_ms": cell["p50_ms"], "p99_ms": cell["p99_ms"], "errors": cell["n_errors"]})
    parts = payload.get("parts")
    for population in POPULATIONS:
        cell = next((r for r in records if r["mode"] == "closed" and r["path"] == "lmrec"
                     and r["population"] == population and r["concurrency"] == 1 and r["p50_ms"]), None)
        if cell is None or not parts:
            continue
        names = (["encode"] if population == "uncached" else []) + ["index_query"] + (
            ["ranker"] if "ranker" in parts else [])
        alone = sum(parts[name]["median_ms"] for name in names)
        value = cell["p50_ms"] / alone if alone else None
        checks.append({"bar": f"one request in flight ({population}): Recommend p50 ≤ {PARTS_RATIO_NEEDED:g}× the "
                              f"sum of its parts alone ({' + '.join(names)})",
                       "value": value, "needed": PARTS_RATIO_NEEDED, "op": "<=",
                       "met": None if value is None else bool(value <= PARTS_RATIO_NEEDED),
                       "recommend_p50_ms": cell["p50_ms"], "parts_ms": alone,
                       "grpc_health_rtt_ms": parts.get("grpc_health_rtt", {}).get("median_ms")})
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


def _cell_order(cell: int, naive: bool) -> tuple[str, ...]:
    if not naive:
        return ("lmrec",)
    return PATHS if cell % 2 == 0 else PATHS[::-1]


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM raises SystemExit while the suite runs, so the `finally`s stop Triton and the gateways
    (they run in sessions of their own and would outlive a plainly killed benchmark)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_gateway_load(config: GatewayLoadConfig, *, progress=print) -> dict:
    with _sigterm_as_exit():
        return _run(config, progress=progress)


def _run(config: GatewayLoadConfig, *, progress=print) -> dict:
    from lmrec.client import RecommenderClient
    from lmrec.server.bundle import load_bundle

    started = time.perf_counter()
    build_dir = ensure_build(config, progress=progress)
    bundle = load_bundle(build_dir)
    dataset = bundle.dataset
    rng = random.Random(config.seed)
    users = rng.sample(list(dataset.user_ids), min(config.cached_users, len(dataset.user_ids)))
    item_ids = list(dataset.item_ids)
    populations = {name: Population(name, users, item_ids, config.seed + i) for i, name in enumerate(POPULATIONS)}
    invoked = Path(sys.argv[0]).name == "lmrec" and sys.argv[1:]
    out = {"suite": "gateway", "command": "lmrec " + " ".join(sys.argv[1:]) if invoked else None,
           "reproduce": reproduce_command(config), "machine": machine_facts(), "config": _config_json(config),
           "build": {"build_dir": str(build_dir), "bundle_version": bundle.version,
                     "dataset": bundle.manifest.get("dataset"), "n_items": len(item_ids),
                     "n_users": len(dataset.user_ids), "precision": bundle.manifest["encoder"].get("precision"),
                     "ranker": bundle.ranker_model is not None},
           "records": [], "max_throughput": {}, "stages": {}, "parts": {}, "ratios": [], "bars": [],
           "notes": [], "seconds": 0.0}

    def save(plot: bool = False) -> None:
        out["seconds"] = round(time.perf_counter() - started, 1)
        out["max_throughput"] = max_throughput(out["records"])
        out["stages"] = stage_summary(out["records"])
        out["ratios"] = ratios(out["records"])
        out["bars"] = bar_checks(out)
        write_results(out, config.out_dir, config.name, plot=plot)

    names = ("lmrec", "naive") if config.naive else ("lmrec",)
    with tempfile.TemporaryDirectory(prefix="lmrec-gateway-bench-") as scratch, contextlib.ExitStack() as stack:
        work = Path(scratch)
        paths = {name: start_path(name, build_dir, work, config, stack, progress=progress) for name in names}

        # Warm-up: fill the lmrec cache with the cached users, collect real profile texts, then a short burst.
        texts: dict[str, list[str]] = {"cached": [], "uncached": []}
        for name, path in paths.items():
            with RecommenderClient(path.address, timeout_s=60.0) as client:
                for user in users:
                    response = client.recommend(user, k=config.k)
                    if name == "lmrec":
                        texts["cached"].append(response.profile_text)
                for n in range(8):
                    response = client.recommend(**populations["uncached"].request(-1, n), k=config.k)
                    if name == "lmrec":
                        texts["uncached"].append(response.profile_text)
            if config.warmup_s > 0:
                for population in populations.values():
                    asyncio.run(closed_loop(path.address, population, 2, config.warmup_s, k=config.k,
                                            timeout_s=config.timeout_s))
            wait_until_idle(path, 600.0)
        progress(f"warmed up {', '.join(paths)} ({len(users)} cached users)")

        cell = 0
        for population in POPULATIONS:
            for concurrency in config.concurrency:
                for name in _cell_order(cell, config.naive):
                    samples, delta = measure(paths[name], closed_loop, populations[population], concurrency,
                                             config.duration_s, k=config.k, timeout_s=config.timeout_s)
                    record = _record("closed", name, population, samples, delta, concurrency=concurrency)
                    out["records"].append(record)
                    progress(_progress_line(record))
                    save()
                cell += 1
        save(plot=True)

        progress("measuring the unavoidable parts alone ...")
        out["parts"] = measure_parts(paths["lmrec"], bundle, texts, users, config.parts_repeats)
        progress("parts alone: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in out["parts"].items()))
        save()

        # Open loop: each path at shares of its own maximum sustained throughput, so both are compared at
        # the same utilisation (at the lmrec rates the naive path would only queue up and degrade).
        peaks = max_throughput(out["records"])
        for population in POPULATIONS:
            for share in config.open_loop_shares:
                for name in _cell_order(cell, config.naive):
                    peak = peaks.get(f"{name}/{population}")
                    if peak is None or peak["throughput_rps"] <= 0:
                        continue
                    rate = share * peak["throughput_rps"]
                    samples, delta = measure(paths[name], open_loop, populations[population], rate,
                                             config.duration_s, k=config.k, timeout_s=config.timeout_s,
                                             arrivals=config.arrivals, seed=config.seed + cell)
                    record = _record("open", name, population, samples, delta, share=share, rate_rps=rate)
                    out["records"].append(record)
                    progress(_progress_line(record))
                    save()
                cell += 1
        for path in paths.values():
            if path.gateway.log().count('"level": "ERROR"'):
                out["notes"].append(f"the {path.name} gateway logged errors; see its log")
    save(plot=True)
    if config.scale_items:  # after the two main paths are stopped: a padded bundle may need much memory
        with tempfile.TemporaryDirectory(prefix="lmrec-gateway-scale-") as scratch:
            measure_scale(config, build_dir, Path(scratch), populations, users, progress=progress,
                          on_record=lambda record: (out["records"].append(record), save()))
    out["notes"].append("Load generator, gateway and Triton share the machine's cores; the generator's own CPU use "
                        "is part of the measurement.")
    save(plot=True)
    return out


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
    return (f"[{record['mode']}] {record['population']:<8} {where:<16} {record['path']:<5}: "
            f"{record['throughput_rps']:.1f} req/s, {latency}, errors {record['n_errors']}, "
            f"degraded {record['degraded']}")


# ------------------------------------------------------------------------------------------- output


def write_results(payload: dict, out_dir: Path, name: str, *, plot: bool = True) -> list[Path]:
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=(lambda png: chart(payload, png)) if plot else None)


def _fmt(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _errors(record: dict | None) -> str:
    if record is None:
        return "–"
    return ", ".join(f"{code} {n}" for code, n in sorted(record["errors"].items())) or "0"


def render_markdown(payload: dict) -> str:
    machine, build, config = payload["machine"], payload.get("build", {}), payload["config"]
    records = payload.get("records", [])
    lines = ["# Gateway load suite", "",
             f"Reproduce: `{payload.get('reproduce') or 'lmrec bench gateway --build-dir build/ml-100k'}`  ",
             f"Command: `{payload.get('command') or '–'}`  ",
             f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['date']}; "
             f"{payload.get('seconds', 0):.0f} s in all.  ",
             f"Build: `{build.get('build_dir')}` bundle {build.get('bundle_version')} ({build.get('dataset')}, "
             f"{build.get('n_items')} items, {build.get('n_users')} users, encoder {build.get('precision')}, "
             f"ranker {'yes' if build.get('ranker') else 'no'}).  ",
             f"Cells of {config['duration_s']:g} s, k={config['k']}, {config['cached_users']} cached users, "
             f"uncached = anonymous sessions of {SESSION_ITEMS} random items. lmrec = hnswlib + user-vector cache + "
             "dynamic batching; naive = exact retriever, no cache, no dynamic batching. Paths alternate cell by cell.",
             ""]

    def find(mode, path, population, key, value):
        return next((r for r in records if r["mode"] == mode and r["path"] == path and r["population"] == population
                     and r.get(key) == value), None)

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
    opened = [r for r in records if r["mode"] == "open"]
    if opened:
        lines += [f"## Open loop ({config['arrivals']} arrivals; latency from the scheduled send time)", ""]
        rows = [[r["population"], f"{r['share']:.0%}", f"{r['rate_rps']:.1f}", r["path"], f"{r['throughput_rps']:.1f}",
                 f"{r.get('answered_rps', r['throughput_rps']):.1f}",
                 _fmt(r["p50_ms"]), _fmt(r["p95_ms"]), _fmt(r["p99_ms"]),
                 _fmt(r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else None, ".2f"), _errors(r), r["degraded"],
                 _fmt(r.get("max_send_lag_ms"))] for r in opened]
        lines += markdown_table(["population", "share of own max", "offered req/s", "path", "full answers/s",
                                 "all answers/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "errors", "degraded",
                                 "max send lag ms"],
                                rows) + [""]
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
        return (f"Recommend p50 {bar['recommend_p50_ms']:.2f} ms vs parts {bar['parts_ms']:.2f} ms"
                + (f" (a bare gRPC round trip: {rtt:.2f} ms)" if rtt is not None else ""))
    if "p50_ms" in bar:
        return f"p50 {bar['p50_ms']:.1f} ms, p99 {bar['p99_ms']:.1f} ms, errors {bar['errors']}"
    return ""


def chart(payload: dict, path: Path) -> Path:
    """Throughput and p99 vs concurrency (lmrec vs naive, both populations) and the stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in payload.get("records", []) if r["mode"] == "closed"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"lmrec": "-", "naive": "--"}
    colors = {"cached": "#1f77b4", "uncached": "#d62728"}
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


# ---------------------------------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _shares(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None
    if any(not 0 < v <= 2 for v in values):
        raise argparse.ArgumentTypeError(f"shares must be in (0, 2], got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GatewayLoadConfig(build_dir=Path("build/ml-100k"))
    parser.add_argument("--build-dir", default=str(defaults.build_dir),
                        help="build folder served (built first when it has no bundle; default build/ml-100k)")
    parser.add_argument("--dataset", default=None, help="data set to build from when needed (default: the folder name)")
    parser.add_argument("--data-dir", default=None, help="its data folder (default: ../shared/data/<dataset>)")
    parser.add_argument("--concurrency", type=_ints, default=defaults.concurrency, metavar="N,N,...",
                        help="closed-loop concurrency levels (default: 1,2,4,8,16,32)")
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds per cell (default: 10)")
    parser.add_argument("--open-loop-shares", type=_shares, default=defaults.open_loop_shares, metavar="S,S,...",
                        help="open-loop rates as shares of each path's maximum throughput (default: 0.25,0.5,0.7,0.9)")
    parser.add_argument("--arrivals", choices=("poisson", "fixed"), default=defaults.arrivals)
    parser.add_argument("-k", type=int, default=defaults.k, help="items per Recommend (default: 10)")
    parser.add_argument("--cached-users", type=int, default=defaults.cached_users)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline path")
    parser.add_argument("--scale-items", type=_ints, default=(), metavar="N,N,...",
                        help="bar 5: also pad the bundle to these catalogue sizes and measure each "
                             "(e.g. 10000,1000000; default: skipped)")
    parser.add_argument("--scale-dir", default=None,
                        help="where padded builds are kept and reused (default: <build-dir>-scaled/)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=str(defaults.out_dir), help="result folder")
    parser.add_argument("--name", default=defaults.name, help="result file stem")


def config_from_args(args) -> GatewayLoadConfig:
    return GatewayLoadConfig(
        build_dir=Path(args.build_dir), concurrency=tuple(args.concurrency), duration_s=args.duration,
        open_loop_shares=tuple(args.open_loop_shares), k=args.k, naive=not args.no_naive, out_dir=Path(args.out),
        name=args.name, seed=args.seed, dataset=args.dataset,
        data_dir=Path(args.data_dir) if args.data_dir else None, cached_users=args.cached_users,
        arrivals=args.arrivals, scale_items=tuple(args.scale_items),
        scale_dir=Path(args.scale_dir) if args.scale_dir else None)
