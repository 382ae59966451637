"""Triton suite: NVIDIA's own `perf_analyzer` against the models a build serves, over a concurrency sweep.

`lmrec bench triton --build-dir build/ml-100k` → benchmarks/results/triton.{json,md,png}.

The real `tritonserver` (from the nvidia-pytriton wheel) is started on `<build-dir>/model_repository`;
`perf_analyzer` (from the tritonclient==2.51.0 wheel, `.venv/bin/perf_analyzer`) then loads it over
gRPC, one run per (model, batch size, concurrency):

* `text_encoder` (TEXT: a BYTES tensor of shape [1] per row) receives the item texts of the build's
  catalogue (`--input-data` JSON, cycled round-robin), so tokenisation and sequence lengths are real;
* `ranker` (FEATURES: FP32 [n_features] per row), when the repository has one, receives seeded random
  feature rows (its cost does not depend on the values).

`-f out.csv --verbose-csv` gives the client percentiles and the server-side split of the average
latency (queue, compute input/infer/output); each point becomes one record.

perf_analyzer links against libb64.so.0d and libcudart.so.12, which a plain Debian machine lacks:
`benchmarks/peers/setup_perf_analyzer.sh` puts both under `.perf_analyzer/` without root, and
`find_perf_analyzer()` points LD_LIBRARY_PATH at them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lmrec.cli_client import CliError
from lmrec.cli_types import int_in_range, non_negative_float, positive_float, positive_int, seed_value
from lmrec.export.repository import model_family

from .cli_checks import NothingMeasured, check_results_file
from .machine import machine_facts
from .report import markdown_table, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_SCRIPT = REPO_ROOT / "benchmarks" / "peers" / "setup_perf_analyzer.sh"
LIBS_ENV = "PERF_ANALYZER_LIBS"  # overrides where setup_perf_analyzer.sh put the libraries
# Relative to the libraries folder (.perf_analyzer/): what setup_perf_analyzer.sh unpacks there.
LIB_SUBDIRS = ("libb64/usr/lib/x86_64-linux-gnu", "cuda/nvidia/cuda_runtime/lib")
MEASUREMENT_MODES = ("time_windows", "count_windows")
UNSTABLE_MARKER = "Failed to obtain stable measurement"
DEFAULT_BUILD_DIR = Path("build/ml-100k")


class PerfAnalyzerError(CliError):
    """perf_analyzer is missing, cannot load its libraries, or a run failed; the message says what to do
    (the CLI prints it as an error, not a traceback)."""


@dataclass(frozen=True, kw_only=True)
class TritonPerfConfig:
    build_dir: Path
    # Those absent from the repository are skipped. The default stands for the models the latest bundle
    # calls: after a build with another Triton config they are siblings such as `text_encoder_<digest>`.
    models: tuple[str, ...] = ("text_encoder", "ranker")
    batch_sizes: tuple[int, ...] = (1, 8)
    ranker_batch_sizes: tuple[int, ...] = ()  # rows per ranker request; () → batch_sizes
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    measurement_ms: int = 3000  # --measurement-interval (time_windows)
    measurement_mode: str = "time_windows"
    measurement_request_count: int = 50  # --measurement-request-count (count_windows)
    stability_pct: float = 10.0  # perf_analyzer's -s: max/min of the last 3 windows within this %
    max_trials: int = 10  # -r: windows before a point counts as unstable
    relaxed_stability_pct: float = 50.0  # one retry of an unstable point with this -s (marked stable=False)
    percentile: int = 99  # --percentile: the stability check uses p99 (all of p50..p99 are reported anyway)
    max_texts: int = 2000  # catalogue texts put into --input-data (cycled)
    feature_rows: int = 256  # random ranker rows put into --input-data
    seed: int = 42
    timeout_s: float = 600.0  # one perf_analyzer run
    out_dir: Path = Path("benchmarks/results")
    name: str = "triton"


# ---------------------------------------------------------------------------------------------- binary


def _library_roots() -> list[Path]:
    roots = []
    if os.environ.get(LIBS_ENV):
        roots.append(Path(os.environ[LIBS_ENV]))
    roots += [REPO_ROOT / ".perf_analyzer", Path.cwd() / ".perf_analyzer"]
    return list(dict.fromkeys(p.resolve() for p in roots))


def _missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries the binary cannot resolve under `env` (ldd; falls back to running it)."""
    if shutil.which("ldd"):
        result = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True, timeout=30)
        return [line.split("=>")[0].strip() for line in result.stdout.splitlines() if "not found" in line]
    result = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=30)
    text = result.stdout + result.stderr
    return [text.strip()] if "error while loading shared libraries" in text else []


def find_perf_analyzer() -> tuple[Path, dict[str, str]]:
    """perf_analyzer and the environment it runs in (LD_LIBRARY_PATH with the libraries it links).

    Raises PerfAnalyzerError naming benchmarks/peers/setup_perf_analyzer.sh when a library is missing.
    """
    candidates = [Path(sys.executable).parent / "perf_analyzer"]
    if shutil.which("perf_analyzer"):
        candidates.append(Path(shutil.which("perf_analyzer")))
    binary = next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)
    if binary is None:
        raise PerfAnalyzerError(f"perf_analyzer not found next to {sys.executable} nor on PATH: it ships in the "
                                "tritonclient==2.51.0 wheel (pip install 'tritonclient[grpc]==2.51.0')")
    env = dict(os.environ)
    dirs = [str(root / sub) for root in _library_roots() for sub in LIB_SUBDIRS if (root / sub).is_dir()]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*dirs, os.environ.get("LD_LIBRARY_PATH")]))
    missing = _missing_libraries(binary, env)
    if missing:
        raise PerfAnalyzerError(
            f"{binary} cannot load {', '.join(missing)}: run {SETUP_SCRIPT} (no root needed: it fetches libb64-0d "
            f"with `apt-get download` and nvidia-cuda-runtime-cu12 with `pip install --target` into "
            f"{REPO_ROOT / '.perf_analyzer'}; or set {LIBS_ENV} to where they are)")
    return binary, env


def perf_analyzer_version(binary: Path, env: dict[str, str]) -> str:
    result = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=30)
    return (result.stdout + result.stderr).strip().splitlines()[-1] if (result.stdout + result.stderr).strip() else "?"


# ------------------------------------------------------------------------------------------ input data


def read_model_config(repository: Path, model: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse((Path(repository) / model / "config.pbtxt").read_text(), mc.ModelConfig())


def latest_bundle_dir(build_dir: Path) -> Path:
    from lmrec.server.bundle import complete_versions

    versions = complete_versions(build_dir)
    if not versions:
        raise FileNotFoundError(f"no complete bundle under {Path(build_dir) / 'bundles'} (run `lmrec build` first)")
    return Path(build_dir) / "bundles" / str(versions[-1])


def catalogue_texts(build_dir: Path, limit: int) -> list[str]:
    from lmrec.export.snapshot import load_snapshot
    from lmrec.text import item_text_of

    texts = [item_text_of(info) for info in load_snapshot(latest_bundle_dir(build_dir)).items]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"the catalogue of {build_dir} has no item texts")
    return texts[:limit] if limit > 0 else texts


def input_data(model_config, *, texts: list[str], rows: int, seed: int) -> tuple[dict, str]:
    """The --input-data JSON for one model (one entry per batch-1 request) and a line saying what it holds."""
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

    rng = np.random.default_rng(seed)
    columns, described = {}, []
    for spec in model_config.input:
        dims = list(spec.dims)
        if spec.data_type == mc.TYPE_STRING:
            if dims != [1]:
                raise PerfAnalyzerError(f"{model_config.name}.{spec.name}: string input of shape {dims} (expected [1])")
            columns[spec.name] = [[t] for t in texts]
            described.append(f"{spec.name}: {len(texts)} catalogue item texts")
        elif spec.data_type == mc.TYPE_FP32:
            if any(d < 0 for d in dims):
                raise PerfAnalyzerError(f"{model_config.name}.{spec.name}: variable shape {dims} is not supported")
            values = rng.standard_normal((rows, *dims)).astype(np.float32).round(5)
            columns[spec.name] = [row.reshape(-1).tolist() for row in values]
            described.append(f"{spec.name}: {rows} seeded standard-normal FP32 rows of {dims}")
        else:
            raise PerfAnalyzerError(f"{model_config.name}.{spec.name}: input type "
                                    f"{mc.DataType.Name(spec.data_type)} is not supported by this suite")
    n = min(len(v) for v in columns.values())
    return {"data": [{name: values[i] for name, values in columns.items()} for i in range(n)]}, "; ".join(described)


# ------------------------------------------------------------------------------------------ CSV parsing

# perf_analyzer CSV column → record field (µs unless named otherwise). The seven latency components
# add up to the client's average latency.
COMPONENTS = {
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
}
PERCENTILES = {"p50 latency": "p50", "p90 latency": "p90", "p95 latency": "p95", "p99 latency": "p99"}


def parse_csv(text: str, *, model: str, batch: int) -> list[dict]:
    """perf_analyzer's `-f` CSV (with or without --verbose-csv) → one record per concurrency level."""
    records = []
    for row in csv.DictReader(io.StringIO(text)):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not row.get("Concurrency"):
            continue
        number = {k: float(v) for k, v in row.items() if v and _is_number(v)}
        record = {"model": model, "batch": batch, "concurrency": int(number["Concurrency"]),
                  "infer_per_s": number["Inferences/Second"],
                  "requests_per_s": number["Inferences/Second"] / batch}
        for column, key in PERCENTILES.items():
            if column in number:
                record[f"client_{key}_ms"] = number[column] / 1000.0
        for column, key in COMPONENTS.items():
            record[key] = number.get(column, 0.0)
        record["client_avg_ms"] = sum(record[k] for k in COMPONENTS.values()) / 1000.0
        compute = record["server_compute_input_us"] + record["server_compute_infer_us"] + record["server_compute_output_us"]
        record["server_compute_us"] = compute
        served = record["server_queue_us"] + compute
        record["queue_share"] = record["server_queue_us"] / served if served else 0.0
        record["raw"] = {k: v for k, v in row.items()}
        records.append(record)
    return sorted(records, key=lambda r: r["concurrency"])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------- run


def perf_command(binary: Path, config: TritonPerfConfig, *, model: str, batch: int, concurrency: int, url: str,
                 data_file: Path, csv_file: Path, stability_pct: float) -> list[str]:
    args = [str(binary), "-m", model, "-i", "grpc", "-u", url, "-b", str(batch),
            "--concurrency-range", f"{concurrency}:{concurrency}:1", "--input-data", str(data_file),
            f"--percentile={config.percentile}", "-s", f"{stability_pct:g}", "-r", str(config.max_trials),
            "-f", str(csv_file), "--verbose-csv"]
    if config.measurement_mode == "count_windows":
        args += ["--measurement-mode", "count_windows",
                 "--measurement-request-count", str(config.measurement_request_count)]
    else:
        args += ["--measurement-interval", str(config.measurement_ms)]
    return args


def _display(args: list[str], workdir: Path) -> str:
    """The command as a person would type it (temporary paths shortened, the binary by name)."""
    shown = [Path(args[0]).name] + [a.replace(str(workdir) + "/", "") for a in args[1:]]
    return " ".join(shown)


def _measure_point(binary, env, config, *, model, batch, concurrency, url, data_file, workdir, progress) -> dict:
    csv_file = workdir / f"{model}-b{batch}-c{concurrency}.csv"
    attempts = [(config.stability_pct, True)]
    if config.relaxed_stability_pct > config.stability_pct:
        attempts.append((config.relaxed_stability_pct, False))
    output = ""
    for stability_pct, stable in attempts:
        csv_file.unlink(missing_ok=True)
        args = perf_command(binary, config, model=model, batch=batch, concurrency=concurrency, url=url,
                            data_file=data_file, csv_file=csv_file, stability_pct=stability_pct)
        started = time.perf_counter()
        try:
            result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            raise PerfAnalyzerError(f"perf_analyzer ran past {config.timeout_s:.0f}s: {_display(args, workdir)}")
        seconds = time.perf_counter() - started
        output = (result.stdout + result.stderr).strip()
        if result.returncode == 0 and csv_file.is_file():
            records = parse_csv(csv_file.read_text(), model=model, batch=batch)
            if not records:
                raise PerfAnalyzerError(f"perf_analyzer wrote no rows: {_display(args, workdir)}\n{output[-2000:]}")
            record = records[0]
            record.update(stable=stable, stability_pct=stability_pct, seconds=round(seconds, 2),
                          command=_display(args, workdir))
            return record
        if UNSTABLE_MARKER in output:
            if stable and len(attempts) > 1:
                progress(f"      unstable at -s {stability_pct:g}; retrying with -s {config.relaxed_stability_pct:g}")
                continue
            raise PerfAnalyzerError(f"no stable measurement at -s {stability_pct:g} within {config.max_trials} "
                                    f"windows (lengthen the windows or raise --max-trials): "
                                    f"{_display(args, workdir)}\n{output[-2000:]}")
        raise PerfAnalyzerError(f"perf_analyzer failed (exit {result.returncode}): {_display(args, workdir)}\n"
                                f"{output[-2000:]}")
    raise AssertionError("unreachable")


def config_payload(config: TritonPerfConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()}


def reproduce_command(config: TritonPerfConfig) -> str:
    """`lmrec bench triton ...` with every setting that differs from the defaults."""
    default = TritonPerfConfig(build_dir=DEFAULT_BUILD_DIR)
    parts = ["lmrec bench triton", f"--build-dir {config.build_dir}"]
    for name, flag in _FLAGS.items():
        value = getattr(config, name)
        if value != getattr(default, name):
            parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def run_triton_perf(config: TritonPerfConfig, *, progress=print) -> dict:
    from lmrec.server.triton_launcher import TritonConfig, TritonProcess, check_repository

    if config.measurement_mode not in MEASUREMENT_MODES:
        raise ValueError(f"measurement_mode must be one of {MEASUREMENT_MODES}, not {config.measurement_mode!r}")
    started = time.perf_counter()
    build_dir = Path(config.build_dir)
    repository = build_dir / "model_repository"
    binary, env = find_perf_analyzer()
    models = config.models
    if models == TritonPerfConfig.models:
        from lmrec.server.bundle import bundle_model_names

        served = bundle_model_names(build_dir)
        models = served + tuple(m for m in models if not any(model_family(s) == m for s in served))
    present = [m for m in models if (repository / m / "config.pbtxt").is_file()]
    skipped = [m for m in models if m not in present]
    if not present:
        raise FileNotFoundError(f"none of {list(models)} is in {repository} (run `lmrec build` first)")
    check_repository(repository, tuple(present))
    notes = [f"`{m}` is not in {repository}: skipped (build with `--fused` to serve the ranker)" for m in skipped]
    for note in notes:
        progress(note)

    out = {"suite": "triton", "command": reproduce_command(config), "machine": machine_facts(),
           "config": config_payload(config), "perf_analyzer": perf_analyzer_version(binary, env),
           "models": {}, "records": [], "failures": [], "notes": notes}
    workdir = Path(tempfile.mkdtemp(prefix="lmrec-perf-"))
    try:
        texts = catalogue_texts(build_dir, config.max_texts) if any(
            _has_string_input(read_model_config(repository, m)) for m in present) else []
        data_files = {}
        for model in present:
            model_config = read_model_config(repository, model)
            data, described = input_data(model_config, texts=texts, rows=config.feature_rows, seed=config.seed)
            data_files[model] = workdir / f"{model}-input.json"
            data_files[model].write_text(json.dumps(data))
            out["models"][model] = {
                "inputs": described, "max_batch_size": model_config.max_batch_size,
                "max_queue_delay_us": model_config.dynamic_batching.max_queue_delay_microseconds,
                "instances": sum(g.count or 1 for g in model_config.instance_group) or 1,
                "parameters": {k: v.string_value for k, v in model_config.parameters.items()},
            }
        check_batch_sizes(config, {model: info["max_batch_size"] for model, info in out["models"].items()})
        progress(f"starting Triton on {repository} with {', '.join(present)} ...")
        with TritonProcess(TritonConfig(repository=repository, models=tuple(present))) as triton:
            progress(f"Triton ready (gRPC {triton.grpc_url}); perf_analyzer: {out['perf_analyzer']}")
            for model in present:
                for batch in batches_of(config, model)[0]:
                    for concurrency in config.concurrency:
                        if not triton.is_running():
                            raise PerfAnalyzerError(f"tritonserver died during the run:\n{triton.log_tail()}")
                        progress(f"  {model} batch {batch} concurrency {concurrency} ...")
                        try:
                            record = _measure_point(binary, env, config, model=model, batch=batch,
                                                    concurrency=concurrency, url=triton.grpc_url,
                                                    data_file=data_files[model], workdir=workdir, progress=progress)
                        except PerfAnalyzerError as error:
                            progress(f"      FAILED: {str(error).splitlines()[0]}")
                            out["failures"].append({"model": model, "batch": batch, "concurrency": concurrency,
                                                    "error": str(error)[-3000:]})
                            continue
                        progress(f"      {record['infer_per_s']:.1f} infer/s, p50 {record['client_p50_ms']:.1f} ms, "
                                 f"p99 {record['client_p99_ms']:.1f} ms, queue {record['queue_share']:.0%}"
                                 + ("" if record["stable"] else " (unstable at -s "
                                    f"{config.stability_pct:g})"))
                        out["records"].append(record)
                        out["seconds"] = round(time.perf_counter() - started, 1)
                        write_results(out, config.out_dir, config.name)  # partial results survive a long run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not out["records"]:  # nothing to publish: an earlier run's results stay as they were
        first = out["failures"][0] if out["failures"] else None
        raise NothingMeasured("no point was measured, nothing written" + (
            f": {len(out['failures'])} failed, the first ({first['model']} batch {first['batch']}"
            f"{' concurrency ' + str(first['concurrency']) if 'concurrency' in first else ''}): "
            f"{first['error'].splitlines()[0]}" if first else ""))
    out["seconds"] = round(time.perf_counter() - started, 1)
    write_results(out, config.out_dir, config.name)
    return out


def batches_of(config: TritonPerfConfig, model: str) -> tuple[tuple[int, ...], str]:
    """The batch sizes `model` is measured at and the option that gave them."""
    if model_family(model) == "ranker" and config.ranker_batch_sizes:
        return config.ranker_batch_sizes, "--ranker-batch-sizes"
    return config.batch_sizes, "--batch-sizes"


def check_batch_sizes(config: TritonPerfConfig, max_batch_sizes: dict[str, int]) -> None:
    """Refuse, before Triton starts, a batch size a model does not take (its config's max_batch_size; 0: no
    batching, one row per request): perf_analyzer would refuse every point of it."""
    for model, largest in max_batch_sizes.items():
        largest = max(largest, 1)
        batches, option = batches_of(config, model)
        too_large = [b for b in batches if b > largest]
        if too_large:
            raise CliError(f"{option} {','.join(map(str, batches))}: {model} takes at most {largest} rows per "
                           f"request (max_batch_size in its config.pbtxt); {','.join(map(str, too_large))} cannot run")


def _has_string_input(model_config) -> bool:
    from tritonclient.grpc import model_config_pb2 as mc

    return any(spec.data_type == mc.TYPE_STRING for spec in model_config.input)


# ----------------------------------------------------------------------------------------------- report


def write_results(payload: dict, out_dir: Path, name: str) -> list[Path]:
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=lambda png: plot(payload["records"], png))


def render_markdown(payload: dict) -> str:
    machine, config = payload["machine"], payload["config"]
    mode = (f"count windows of ≥{config['measurement_request_count']} requests" if config["measurement_mode"] ==
            "count_windows" else f"{config['measurement_ms']} ms windows")
    lines = ["# Triton suite (perf_analyzer)", "",
             f"Reproduce: `{payload.get('command') or 'lmrec bench triton --build-dir build/ml-100k'}`  ",
             f"Machine: {machine['cpu_model']}, {machine['cores']} cores; {payload['perf_analyzer']}; "
             f"Triton and perf_analyzer share these cores.  ",
             f"Protocol: gRPC, synchronous requests; {mode}, stable when the last 3 windows agree within "
             f"{config['stability_pct']:g}% (p{config['percentile']} latency and throughput); "
             f"{payload.get('seconds', 0):.0f} s in all.", "",
             "*infer/s* counts rows (requests × batch). *p50/p99* are client-side. *queue* and *compute* are "
             "Triton's server-side averages per request (compute = input + infer + output); *queue share* = "
             "queue / (queue + compute); the queue time includes the dynamic batcher's wait for more requests (up to "
             "the model's max queue delay).", ""]
    by_model: dict[str, list[dict]] = {}
    for record in payload["records"]:
        by_model.setdefault(record["model"], []).append(record)
    for model, records in by_model.items():
        info = payload.get("models", {}).get(model, {})
        lines += [f"## {model}", ""]
        if info:
            lines += [f"Inputs: {info['inputs']}. max_batch_size {info['max_batch_size']}, dynamic batching "
                      f"(max queue delay {info['max_queue_delay_us']} µs), {info['instances']} instance(s), "
                      f"parameters {info['parameters'] or '{}'}.", ""]
        rows = []
        for r in sorted(records, key=lambda r: (r["batch"], r["concurrency"])):
            rows.append([r["batch"], r["concurrency"], f"{r['infer_per_s']:.1f}", f"{r['requests_per_s']:.1f}",
                         f"{r['client_p50_ms']:.2f}", f"{r['client_p99_ms']:.2f}",
                         f"{r['server_queue_us'] / 1000:.2f}", f"{r['server_compute_infer_us'] / 1000:.2f}",
                         f"{r['server_compute_us'] / 1000:.2f}", f"{r['queue_share']:.0%}",
                         "yes" if r.get("stable", True) else f"no (-s {r.get('stability_pct', 0):g})"])
        lines += markdown_table(["batch", "concurrency", "infer/s", "requests/s", "p50 ms", "p99 ms", "queue ms",
                                 "compute infer ms", "compute ms", "queue share", "stable"], rows) + [""]
    if payload.get("failures"):
        lines += ["## Failed points", ""]
        lines += markdown_table(["model", "batch", "concurrency", "error"],
                                [[f["model"], f["batch"], f.get("concurrency", "–"),
                                  f["error"].splitlines()[0][:200].replace("|", "/")] for f in payload["failures"]])
        lines.append("")
    if payload["records"]:
        lines += ["One run per point, e.g.:", "", "```", payload["records"][0]["command"], "```", ""]
    for note in payload.get("notes", []):
        lines.append(f"Note: {note}  ")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> Path:
    """Per model: throughput and p99 vs concurrency (one line per batch), and the queue/compute split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in records))
    if not models:
        fig, axis = plt.subplots(figsize=(4, 2))
        axis.text(0.5, 0.5, "no measurements", ha="center", va="center")
        axis.axis("off")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.8 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        mine = [r for r in records if r["model"] == model]
        batches = sorted({r["batch"] for r in mine})
        for batch in batches:
            points = sorted((r for r in mine if r["batch"] == batch), key=lambda r: r["concurrency"])
            x = [r["concurrency"] for r in points]
            row[0].plot(x, [r["infer_per_s"] for r in points], marker="o", label=f"batch {batch}")
            row[1].plot(x, [r["client_p99_ms"] for r in points], marker="o", label=f"batch {batch} p99")
            row[1].plot(x, [r["client_p50_ms"] for r in points], marker=".", linestyle=":",
                        color=row[1].lines[-1].get_color(), label=f"batch {batch} p50")
        row[0].set(title=f"{model}: throughput", xlabel="concurrency", ylabel="inferences/s (rows)")
        row[1].set(title=f"{model}: client latency", xlabel="concurrency", ylabel="ms")
        levels = sorted({r["concurrency"] for r in mine})
        for axis in row[:2]:
            axis.set_xticks(levels)
            axis.legend(fontsize=7)
            axis.grid(alpha=0.3)
        points = sorted(mine, key=lambda r: (r["batch"], r["concurrency"]))
        labels = [f"b{r['batch']}·c{r['concurrency']}" for r in points]
        x = range(len(points))
        bottom = [0.0] * len(points)
        for key, label, color in (("server_queue_us", "queue", "#d62728"),
                                  ("server_compute_input_us", "compute input", "#9edae5"),
                                  ("server_compute_infer_us", "compute infer", "#1f77b4"),
                                  ("server_compute_output_us", "compute output", "#aec7e8")):
            values = [r[key] / 1000 for r in points]
            row[2].bar(x, values, bottom=bottom, color=color, label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
        row[2].set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
        row[2].set(title=f"{model}: server time per request", ylabel="ms")
        row[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- CLI

# config field → flag (used by add_arguments and by reproduce_command)
_FLAGS = {"models": "--models", "batch_sizes": "--batch-sizes", "ranker_batch_sizes": "--ranker-batch-sizes",
          "concurrency": "--concurrency", "measurement_ms": "--measurement-ms",
          "measurement_mode": "--measurement-mode", "measurement_request_count": "--measurement-request-count",
          "stability_pct": "--stability-pct", "max_trials": "--max-trials",
          "relaxed_stability_pct": "--relaxed-stability-pct", "percentile": "--percentile",
          "max_texts": "--max-texts", "seed": "--seed"}


def parse_int_list(text: str) -> tuple[int, ...]:
    """'1,2,4,8' or perf_analyzer's 'start:end:step' ('1:8:1') → a tuple of positive ints."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            start, end, step = (parts + [1])[:3] if len(parts) == 2 else parts
            if step <= 0 or end < start:
                raise ValueError
            values = tuple(range(start, end + 1, step))
        else:
            values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected '1,2,4,8' or 'start:end:step'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options. Options the parser already has (e.g. a shared --out/--name/--seed) are reused."""
    existing = set(parser._option_string_actions)  # noqa: SLF001 - tolerate a parser shared with other suites
    default = TritonPerfConfig(build_dir=DEFAULT_BUILD_DIR)

    def add(flag, **kwargs):
        if flag not in existing:
            parser.add_argument(flag, **kwargs)

    add("--build-dir", default=None, help=f"build folder with model_repository/ and bundles/ (triton suite; "
                                          f"default {DEFAULT_BUILD_DIR})")
    add("--models", default=",".join(default.models),
        help="Triton models to load (comma-separated; absent ones are skipped)")
    add("--batch-sizes", type=parse_int_list, default=default.batch_sizes, help="perf_analyzer -b values, e.g. 1,8")
    add("--ranker-batch-sizes", type=parse_int_list, default=default.ranker_batch_sizes,
        help="rows per ranker request (default: --batch-sizes)")
    add("--concurrency", type=parse_int_list, default=default.concurrency,
        help="concurrency levels: 1,2,4,8 or start:end:step (e.g. 1:8:1)")
    add("--measurement-ms", type=positive_int, default=default.measurement_ms, help="perf_analyzer --measurement-interval")
    add("--measurement-mode", choices=MEASUREMENT_MODES, default=default.measurement_mode)
    add("--measurement-request-count", type=positive_int, default=default.measurement_request_count,
        help="requests per window with --measurement-mode count_windows")
    add("--stability-pct", type=positive_float, default=default.stability_pct, help="perf_analyzer -s")
    add("--max-trials", type=positive_int, default=default.max_trials, help="perf_analyzer -r")
    add("--relaxed-stability-pct", type=non_negative_float, default=default.relaxed_stability_pct,
        help="retry an unstable point once with this -s (0: no retry)")
    add("--percentile", type=int_in_range(1, 99, "--percentile"), default=default.percentile, help="perf_analyzer --percentile")
    add("--max-texts", type=positive_int, default=default.max_texts, help="catalogue texts fed to text_encoder")
    add("--seed", type=seed_value, default=default.seed)
    add("--out", default=str(default.out_dir), help="results folder")
    add("--name", default=default.name, help="result file stem")


def config_from_args(args: argparse.Namespace) -> TritonPerfConfig:
    default = TritonPerfConfig(build_dir=DEFAULT_BUILD_DIR)

    def get(name, fallback):
        value = getattr(args, name, None)
        return fallback if value is None else value

    def ints(name):
        value = get(name, getattr(default, name))
        return parse_int_list(value) if isinstance(value, str) else tuple(value)

    name = get("name", default.name)
    if name == "quality":  # a --name default shared with the quality suite must not overwrite its results
        name = default.name
    models = get("models", default.models)
    models = tuple(m for m in models.split(",") if m) if isinstance(models, str) else tuple(models)
    check_results_file(get("out", default.out_dir), name)
    return TritonPerfConfig(
        build_dir=Path(get("build_dir", DEFAULT_BUILD_DIR)), models=models, batch_sizes=ints("batch_sizes"),
        ranker_batch_sizes=ints("ranker_batch_sizes"), concurrency=ints("concurrency"),
        measurement_ms=int(get("measurement_ms", default.measurement_ms)),
        measurement_mode=get("measurement_mode", default.measurement_mode),
        measurement_request_count=int(get("measurement_request_count", default.measurement_request_count)),
        stability_pct=float(get("stability_pct", default.stability_pct)),
        max_trials=int(get("max_trials", default.max_trials)),
        relaxed_stability_pct=float(get("relaxed_stability_pct", default.relaxed_stability_pct)),
        percentile=int(get("percentile", default.percentile)), max_texts=int(get("max_texts", default.max_texts)),
        seed=int(get("seed", default.seed)), out_dir=Path(get("out", default.out_dir)), name=name)
