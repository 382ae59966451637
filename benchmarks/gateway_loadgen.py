"""Gateway load suite: the load generator. Request populations (cached users, anonymous sessions, known
users with a new item), the closed loop (N workers back-to-back), the open loop (launches on a schedule,
latency from the scheduled time), and `measure`, which runs one cell between metric scrapes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .gateway_config import POPULATIONS, SESSION_ITEMS
from .gateway_metrics import scrape, scrape_delta, scrape_triton, triton_delta, wait_until_idle
from .gateway_processes import ServingPath, check_alive


class Population:
    """What one request of a population asks for; `request(worker, n)` → Recommend keyword arguments.

    `cached`: the n-th of `users` in turn. `uncached`: SESSION_ITEMS random items, no user. `known-uncached`:
    a random one of `known_users` with one random item in `recent_item_ids`, which the gateway adds to their
    history: their profile (the newest items with that one, and their attributes) is encoded, and their
    candidates, features and answer computed. A request with items of its own neither reads nor fills the
    vector, candidate and answer caches; the gateway's cache of resolved users (history, seen items) still
    answers from the user's second request on, as it would for a user whose events are already read.
    """

    def __init__(self, name: str, users: list[str], item_ids: list[str], seed: int,
                 known_users: list[str] | None = None) -> None:
        if name not in POPULATIONS:
            raise ValueError(f"population must be one of {', '.join(POPULATIONS)}, got {name!r}")
        self.name = name
        self.users = users
        self.item_ids = item_ids
        self.known_users = known_users or users
        self.seed = seed
        self._rngs: dict[int, random.Random] = {}

    def request(self, worker: int, n: int) -> dict:
        if self.name == "cached":
            return {"user_id": self.users[n % len(self.users)]}
        rng = self._rngs.get(worker)
        if rng is None:
            rng = self._rngs[worker] = random.Random(self.seed * 1_000_003 + worker)
        if self.name == "known-uncached":
            return {"user_id": rng.choice(self.known_users), "recent_item_ids": [rng.choice(self.item_ids)]}
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


async def _timed(call, samples: Samples, since: float):
    """Await one RPC: its latency from `since` into `samples`, or its status among the errors (then None)."""
    from lmrec.client import ClientError

    try:
        response = await call
    except ClientError as error:
        samples.errors[error.code] += 1
        return None
    samples.latencies.append(time.perf_counter() - since)
    return response


async def _send(client, kwargs: dict, k: int, samples: Samples, since: float) -> None:
    response = await _timed(client.recommend(k=k, **kwargs), samples, since)
    if response is not None:
        samples.degraded += bool(response.degraded)


async def _send_health(client, samples: Samples, since: float) -> None:
    """A no-op RPC (gRPC Health.Check), on a channel set up as a Recommend cell's: what the generator, gRPC
    and the event loops cost without any recommender work."""
    await _timed(client.health(), samples, since)


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
                    timeout_s: float, arrivals: str, seed: int, no_op: bool = False) -> Samples:
    """Launch on schedule regardless of completions; latency counts from the scheduled time. `no_op`: send
    Health.Check instead of Recommend on the same schedule (the control for the tail bar)."""
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
            send = (_send_health(client, samples, scheduled) if no_op
                    else _send(client, population.request(0, n), k, samples, scheduled))
            tasks.append(asyncio.create_task(send))
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
