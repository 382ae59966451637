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
slow drifts of the machine hit both alike. Three request populations:

* `cached`: a small fixed set of known users (`cached_users`), each requested once before measuring,
  so the lmrec gateway answers them from its user-vector cache (no encoder call) and, unless
  `--candidate-cache-users 0`, from its candidate cache (no retrieval or feature computation; the
  blend, or the Triton ranker call, and the explanations still run per request).
* `uncached`: anonymous sessions, each with 3 random `recent_item_ids`: the profile is encoded by
  Triton on every request.
* `known-uncached`: a random known user (any of the data set's) with one random item in
  `recent_item_ids`, which the gateway adds to their history: their profile (their newest items with
  that one, and their attributes: about 146 tokens on ml-100k, against about 50 for a 3-item session)
  is encoded, and candidates, features and the answer are computed, as for a known user whose new
  events make everything the gateway kept for them stale. Such a request neither reads nor fills the
  vector, candidate and answer caches; the cache of resolved users (history, seen items) answers from a
  user's second request on (the naive path has it off).

`--populations` picks which are measured (default: all three, in this order).

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
   the bundle has one. A gRPC health round trip is recorded alongside, outside the sum. Bar 4b is judged
   on the same parts measured paired: each Recommend at one in flight with its parts alone right before
   or right after it, alternating (cached: index + ranker; uncached and known-uncached: + the encode of a
   real profile text of the same population),
   `parts_repeats` times per population; the machine's speed drifts within minutes, and pairs see the
   same drift. The issue names the parts (one index query, one ranker call); the fused path makes no
   index query, and the report says what the ratio is without it.
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

The code, by responsibility: `gateway_config` (settings, shared constants, the reproduce command),
`gateway_processes` (Triton and gateway processes, the naive model repository, SIGTERM),
`gateway_loadgen` (populations, closed and open loop, one measured cell), `gateway_metrics` (gateway and
Triton counters around a cell), `gateway_parts` (parts alone), `gateway_scale` (bar 5), `gateway_stats`
(records, peaks, ratios, bars) and `gateway_report` (Markdown and PNG). This module runs the suite and owns
its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from lmrec.cli import invoked_command
from lmrec.cli_types import int_in_range, non_negative_int, positive_float, positive_int, seed_value
from lmrec.stopping import sigterm_as_exit

from .cli_checks import check_results_file
from .gateway_config import (DATASETS_ROOT, MAX_DEGRADED_SHARE, P99_OVER_P50_NEEDED, PARTS_RATIO_NEEDED, PATHS,
                             POPULATIONS, SCALE_RATIO_NEEDED, SESSION_ITEMS, STAGES, GatewayLoadConfig, _config_json,
                             reproduce_command)
from .gateway_loadgen import Population, Samples, arrival_offsets, closed_loop, measure, open_loop
from .gateway_metrics import TRITON_COUNTERS, scrape, scrape_delta, scrape_triton, triton_delta, wait_until_idle
from .gateway_parts import PartCalls, measure_paired, measure_parts
from .gateway_processes import (ManagedProcess, ServingPath, check_alive, lmrec_command,
                                naive_build_dir, start_path, wait_for_gateway, without_dynamic_batching)
from .gateway_report import chart, render_markdown, write_results
from .gateway_scale import SCALE_CHUNK, SCALE_NOISE, measure_scale, scale_bundle
from .gateway_stats import _progress_line, _record, bar_checks, max_throughput, no_op_summary, ratios, stage_summary
from .machine import machine_facts

# Every public name of the suite stays importable from here, the module `lmrec bench gateway` and the tests
# import, as before the split into gateway_* modules.
__all__ = [
    "DATASETS_ROOT", "GatewayLoadConfig", "MAX_DEGRADED_SHARE", "ManagedProcess", "P99_OVER_P50_NEEDED",
    "PARTS_RATIO_NEEDED", "PATHS", "POPULATIONS", "Population", "SCALE_CHUNK", "SCALE_NOISE", "SCALE_RATIO_NEEDED",
    "SESSION_ITEMS", "STAGES", "Samples", "ServingPath", "TRITON_COUNTERS", "add_arguments", "arrival_offsets",
    "bar_checks", "chart", "check_alive", "closed_loop", "config_from_args", "ensure_build", "lmrec_command",
    "max_throughput", "measure", "measure_paired", "measure_parts", "measure_scale", "naive_build_dir",
    "open_loop", "ratios", "render_markdown", "reproduce_command", "run_gateway_load", "scale_bundle", "scrape", "scrape_delta",
    "scrape_triton", "stage_summary", "start_path", "triton_delta", "wait_for_gateway", "wait_until_idle",
    "without_dynamic_batching", "write_results",
]


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


def _cell_order(cell: int, naive: bool) -> tuple[str, ...]:
    if not naive:
        return ("lmrec",)
    return PATHS if cell % 2 == 0 else PATHS[::-1]


def run_gateway_load(config: GatewayLoadConfig, *, progress=print) -> dict:
    with sigterm_as_exit():
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
    # Seeds by the population's place in POPULATIONS: a population draws the same requests whichever are run.
    populations = {name: Population(name, users, item_ids, config.seed + POPULATIONS.index(name),
                                    known_users=list(dataset.user_ids)) for name in config.populations}
    out = {"suite": "gateway", "command": invoked_command(),
           "reproduce": reproduce_command(config), "machine": machine_facts(), "config": _config_json(config),
           "build": {"build_dir": str(build_dir), "bundle_version": bundle.version,
                     "dataset": bundle.manifest.get("dataset"), "n_items": len(item_ids),
                     "n_users": len(dataset.user_ids), "precision": bundle.manifest["encoder"].get("precision"),
                     "max_length": bundle.manifest["encoder"].get("max_length"),
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

        # Warm-up: fill the lmrec cache with the cached users, collect real profile texts of each population
        # (the parts' encodes read them), then a short burst.
        texts: dict[str, list[str]] = {name: [] for name in POPULATIONS}
        for name, path in paths.items():
            with RecommenderClient(path.address, timeout_s=60.0) as client:
                for user in users:
                    response = client.recommend(user, k=config.k)
                    if name == "lmrec":
                        texts["cached"].append(response.profile_text)
                for population in (p for p in config.populations if p != "cached"):
                    for n in range(8):
                        response = client.recommend(**populations[population].request(-1, n), k=config.k)
                        if name == "lmrec":
                            texts[population].append(response.profile_text)
            if config.warmup_s > 0:
                for population in populations.values():
                    asyncio.run(closed_loop(path.address, population, 2, config.warmup_s, k=config.k,
                                            timeout_s=config.timeout_s))
            wait_until_idle(path, 600.0)
        progress(f"warmed up {', '.join(paths)} ({len(users)} cached users)")
        # How long each population's profiles are (what its encodes read), from the warm-up's answers.
        out["profile_texts"] = {name: {"n": len(found), "median_chars": float(np.median([len(t) for t in found]))}
                                for name, found in texts.items() if found and name in config.populations}

        cell = 0
        for population in config.populations:
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

        with PartCalls(paths["lmrec"], bundle, texts, users) as calls:
            progress("measuring the unavoidable parts alone ...")
            out["parts"] = measure_parts(paths["lmrec"], calls, texts, config.parts_repeats)
            progress("parts alone: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in out["parts"].items()))
            progress("measuring Recommend and its parts, paired request by request ...")
            out["paired"] = measure_paired(paths["lmrec"], calls, texts, populations, config.parts_repeats,
                                           k=config.k)
        progress("paired: " + ", ".join(f"{name} {v['recommend_ms']:.2f} ms vs parts {v['sum_parts_ms']:.2f} ms"
                                        for name, v in out["paired"].items()))
        save()

        # Open loop: each path at shares of its own maximum sustained throughput, so both are compared at
        # the same utilisation (at the lmrec rates the naive path would only queue up and degrade).
        peaks = max_throughput(out["records"])
        for population in config.populations:
            for share_index, share in enumerate(config.open_loop_shares):
                # The arrivals of a (population, share) are the same whichever populations run.
                arrival_seed = config.seed + 1000 * (1 + POPULATIONS.index(population)) + share_index
                for name in _cell_order(cell, config.naive):
                    peak = peaks.get(f"{name}/{population}")
                    if peak is None or peak["throughput_rps"] <= 0:
                        continue
                    rate = share * peak["throughput_rps"]

                    def run(no_op: bool = False):
                        return measure(paths[name], open_loop, populations[population], rate, config.duration_s,
                                       k=config.k, timeout_s=config.timeout_s, arrivals=config.arrivals,
                                       seed=arrival_seed, no_op=no_op)

                    # The control for the tail bar: a no-op RPC under the same arrivals shows the tail that the
                    # generator, gRPC, the event loops and the shared cores give without recommender work. It
                    # runs before the cell or after it, alternating, so the machine's drift is not on one side.
                    controlled = name == "lmrec" and population == "cached"
                    control = no_op_summary(run(no_op=True)[0]) if controlled and cell % 2 == 1 else None
                    samples, delta = run()
                    if controlled and control is None:
                        control = no_op_summary(run(no_op=True)[0])
                    record = _record("open", name, population, samples, delta, share=share, rate_rps=rate,
                                     **({"no_op_rpc": control} if controlled else {}))
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


def _populations(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in POPULATIONS]
    if not values or unknown or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct populations among {','.join(POPULATIONS)}, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GatewayLoadConfig(build_dir=Path("build/ml-100k"))
    parser.add_argument("--build-dir", default=str(defaults.build_dir),
                        help="build folder served (built first when it has no bundle; default build/ml-100k)")
    parser.add_argument("--dataset", default=None, help="data set to build from when needed (default: the folder name)")
    parser.add_argument("--data-dir", default=None, help="its data folder (default: ../shared/data/<dataset>)")
    parser.add_argument("--concurrency", type=_ints, default=defaults.concurrency, metavar="N,N,...",
                        help="closed-loop concurrency levels (default: 1,2,4,8,16,32)")
    parser.add_argument("--duration", type=positive_float, default=defaults.duration_s, help="seconds per cell (default: 10)")
    parser.add_argument("--open-loop-shares", type=_shares, default=defaults.open_loop_shares, metavar="S,S,...",
                        help="open-loop rates as shares of each path's maximum throughput (default: 0.25,0.5,0.7,0.9)")
    parser.add_argument("--arrivals", choices=("poisson", "fixed"), default=defaults.arrivals)
    parser.add_argument("-k", type=int_in_range(1, 1000, "k"), default=defaults.k, help="items per Recommend (default: 10)")
    parser.add_argument("--populations", type=_populations, default=defaults.populations, metavar="P,P,...",
                        help=f"request populations to measure, in order (default: {','.join(POPULATIONS)})")
    parser.add_argument("--cached-users", type=positive_int, default=defaults.cached_users)
    parser.add_argument("--candidate-cache-users", type=non_negative_int, default=None,
                        help="the lmrec gateway's --candidate-cache-users (0: candidates computed on every request)")
    parser.add_argument("--no-answer-cache", action="store_true",
                        help="the lmrec gateway's --no-answer-cache: cached users through the vector, candidate and "
                             "score caches, their answer computed on every request")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline path")
    parser.add_argument("--scale-items", type=_ints, default=(), metavar="N,N,...",
                        help="bar 5: also pad the bundle to these catalogue sizes and measure each "
                             "(e.g. 10000,1000000; default: skipped)")
    parser.add_argument("--scale-dir", default=None,
                        help="where padded builds are kept and reused (default: <build-dir>-scaled/)")
    parser.add_argument("--seed", type=seed_value, default=defaults.seed)
    parser.add_argument("--out", default=str(defaults.out_dir), help="result folder")
    parser.add_argument("--name", default=defaults.name, help="result file stem")


def config_from_args(args) -> GatewayLoadConfig:
    check_results_file(args.out, args.name)
    return GatewayLoadConfig(
        build_dir=Path(args.build_dir), concurrency=tuple(args.concurrency), duration_s=args.duration,
        open_loop_shares=tuple(args.open_loop_shares), k=args.k, naive=not args.no_naive, out_dir=Path(args.out),
        name=args.name, seed=args.seed, dataset=args.dataset,
        data_dir=Path(args.data_dir) if args.data_dir else None, cached_users=args.cached_users,
        populations=tuple(args.populations),
        arrivals=args.arrivals, scale_items=tuple(args.scale_items), candidate_cache_users=args.candidate_cache_users,
        answer_cache=not args.no_answer_cache, scale_dir=Path(args.scale_dir) if args.scale_dir else None)
