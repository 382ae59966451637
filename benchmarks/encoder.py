"""Encoder suite: one model, one set of texts, through every way of running it; throughput, latency, FLOP/s.

`lmrec bench encoder` → benchmarks/results/encoder.{json,md,png}.

The model is the packaged all-MiniLM-L6-v2; the texts are the data set's item texts (`item_text_of`)
and user profile texts (`profile_text_of` of each user's recent items, newest first, with attributes),
sampled half and half: the real length mix the service encodes. Paths:

    sentence-transformers      PyTorch on the CPU, what most users would pick: the baseline of the ratios
    onnx-fp32, onnx-int8       lmrec's OnnxTextEncoder in process on the fp32 / dynamic-int8 export
    triton-int8, triton-fp32   the lmrec `text_encoder` python model in the real Triton over gRPC,
                               config.pbtxt as generated (dynamic batching on)
    triton-*-nobatch           the same with the `dynamic_batching` block removed (one request per execute)
    infinity-emb               the peer server (own venv, benchmarks/peers/setup_infinity.sh), torch engine

`--device cuda` runs the same paths on a GPU: sentence-transformers and infinity-emb on CUDA in fp32, the
fp32 ONNX and Triton paths through ONNX Runtime's CUDA provider (TF32 off; Triton instances KIND_GPU), the
GEMM peaks as torch products on the GPU. A path the machine cannot run so (all ONNX Runtime paths where
onnxruntime lacks its CUDA provider; the int8 ones always, as ONNX Runtime's CUDA MatMulInteger takes no
u8 activations) is reported under "Paths not measured", never measured on the CPU instead.

Every path is measured at each batch size (texts per request); the served paths also at each client
concurrency (closed loop: N requests in flight, each sent again as soon as it returns). The paths take
turns in rounds (round-robin, the order rotated each round) and each cell reports the median over the
rounds, so slow drifts of a shared machine hit every path alike. GEMM peaks are measured in the same run.

The code, by responsibility: `encoder_config` (paths, settings), `encoder_texts` (texts, tokens, FLOPs,
requests), `encoder_peaks` (GEMM peaks), `encoder_repository` (the export, Triton's model repository),
`encoder_paths` (one runner per path), `encoder_stats` (cells, ratios, efficiency, bars) and
`encoder_report` (Markdown and PNG). This module runs the suite and owns its command line.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lmrec.cli import invoked_command
from lmrec.cli_types import non_negative_int, positive_float, positive_int, seed_value

from .cli_checks import NothingMeasured, check_results_file
from .encoder_config import (ALL_PATHS, BASELINE_PATH, EXPORT_MARKER, FP32_PATHS, INFINITY_PATH, INT8_PATHS,
                             ONNX_PATHS, PATH_ALIASES, REPO_ROOT, SERVED_PATHS, TRITON_PATHS, EncoderBenchConfig,
                             expand_paths)
from .encoder_paths import (CellResult, InfinityPath, InProcessPath, TritonPath, closed_loop, onnx_path,
                            sentence_transformers_path)
from .encoder_peaks import fp32_gemm_peaks, int8_gemm_peaks, measure_peaks, merge_peaks
from .encoder_report import render_markdown, throughput_chart, write_results
from .encoder_repository import prepare_export, triton_model_name, write_triton_repository
from .encoder_stats import (_finish, _median_record, _summarise, bar_checks, best_over_concurrency,
                            compute_efficiency, compute_ratios)
from .encoder_texts import (Chunk, EncoderShape, _load_texts, benchmark_texts, flops_per_sequence, make_chunks,
                            model_max_length, token_lengths)
from .machine import gpu_facts, machine_facts

# Every public name of the suite stays importable from here, the module `lmrec bench encoder` and the tests
# import, as before the split into encoder_* modules.
__all__ = [
    "ALL_PATHS", "BASELINE_PATH", "CellResult", "Chunk", "EXPORT_MARKER", "EncoderBenchConfig", "EncoderShape",
    "FP32_PATHS", "INFINITY_PATH", "INT8_PATHS", "InProcessPath", "InfinityPath", "ONNX_PATHS", "PATH_ALIASES",
    "REPO_ROOT", "SERVED_PATHS", "TRITON_PATHS", "TritonPath", "add_arguments", "bar_checks", "benchmark_texts",
    "best_over_concurrency", "closed_loop", "compute_efficiency", "compute_ratios", "config_from_args",
    "expand_paths", "flops_per_sequence", "fp32_gemm_peaks", "int8_gemm_peaks", "make_chunks", "measure_peaks",
    "merge_peaks", "onnx_path", "prepare_export", "render_markdown", "run_encoder_bench",
    "sentence_transformers_path", "throughput_chart", "token_lengths", "triton_model_name", "write_results",
    "write_triton_repository",
]


def run_encoder_bench(config: EncoderBenchConfig, *, progress=print) -> dict:
    from lmrec.encoder import EncoderSettings

    started = time.perf_counter()
    paths = expand_paths(config.paths)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"suite": "encoder",
                 "command": invoked_command(),
                 "machine": machine_facts(),
                 "config": {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                            for k, v in asdict(config).items()} | {"paths": list(paths)},
                 "records": [], "errors": []}
    if config.synthetic is not None:
        out["config"].update(dataset="synthetic", data_dir=None)
    out["notes"] = [
        "Texts per request = batch; served paths: closed loop with `concurrency` requests in flight from one "
        "asyncio client in this process; in-process paths: one caller.",
        "Achieved GFLOP/s count useful work: each text's own FLOPs, without padding (paths pad differently: "
        "lmrec and sentence-transformers sort by length, lmrec splits batches into similar-length runs); "
        "`padded_gflop_per_s` in the JSON counts each request padded to its longest text.",
        f"Device: {config.device}" + (" (sentence-transformers and infinity-emb on the GPU in fp32, the fp32 ONNX "
                                      "and Triton paths through ONNX Runtime's CUDA provider with TF32 off, Triton "
                                      "instances KIND_GPU, GEMM peaks on the GPU; int8 paths are not run there; no "
                                      "bars: the issue sets them for the CPU machine)"
                                      if config.device == "cuda" else "") + ".",
        "triton-*: the lmrec text_encoder python model (tokenisation inside Triton) with the generated "
        "config.pbtxt; *-nobatch: the same config without its dynamic_batching block.",
        f"infinity-emb: torch engine on --device {config.device}, --batch-size = max(64, largest batch), vector disk cache off, "
        "base64 answers; the same model folder as sentence-transformers.",
    ]

    if config.device == "cuda":
        out["machine"]["gpu"] = gpu_facts()
        if "error" in out["machine"]["gpu"]:
            raise RuntimeError(f"device cuda: {out['machine']['gpu']['error']}")
        paths = _drop_paths_without_cuda(paths, out["errors"], progress)
    if INFINITY_PATH in paths:
        from .peers.infinity import SETUP_HINT, is_installed

        if not is_installed(config.infinity_venv):
            out["errors"].append({"path": INFINITY_PATH, "error": SETUP_HINT})
            progress(f"{INFINITY_PATH}: {SETUP_HINT}")
            paths = tuple(p for p in paths if p != INFINITY_PATH)
    if not paths:  # before the texts, the export and the GEMM peaks: nothing would use them
        raise NothingMeasured("no requested path can run here, nothing written: " + _first_lines(out["errors"]))
    texts, kinds, label = _load_texts(config)
    model_has_tokenizer = all((Path(config.model) / name).is_file()
                              for name in ("tokenizer.json", "sentence_bert_config.json"))
    if any(p in ONNX_PATHS or p in TRITON_PATHS for p in paths) or not model_has_tokenizer:
        export = prepare_export(config, progress=progress)
        tokenizer_file, max_length = export.directory / "tokenizer.json", EncoderSettings.read(export.directory).max_length
    else:  # sentence-transformers and infinity-emb alone need no export: the model's tokenizer and length limit
        export = None
        tokenizer_file, max_length = Path(config.model) / "tokenizer.json", model_max_length(config.model)
    shape = EncoderShape.of_model(config.model)
    lengths = token_lengths(tokenizer_file, max_length, texts)
    per_text = flops_per_sequence(lengths, shape)
    kinds_arr = np.asarray(kinds)
    out["texts"] = {
        "dataset": label, "n_texts": len(texts), "n_items": int((kinds_arr == "item").sum()),
        "n_profiles": int((kinds_arr == "profile").sum()), "max_length": max_length,
        "tokens": {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
                   "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()), "min": int(lengths.min())},
        "tokens_by_kind": {k: float(lengths[kinds_arr == k].mean()) for k in ("item", "profile") if (kinds_arr == k).any()},
    }
    chunks = {b: make_chunks(texts, lengths, b, shape) for b in config.batch_sizes}
    out["arithmetic"] = {
        "model": config.model, "shape": asdict(shape),
        "formula": "L * (2*n*(4*h^2 + 2*h*i) + 2*2*n^2*h) FLOPs per sequence of n tokens",
        "flops_per_sentence": float(per_text.mean()),
        "flops_per_sentence_padded": {str(b): float(sum(c.flops_padded for c in cs) / sum(len(c.texts) for c in cs))
                                      for b, cs in chunks.items()},
    }
    progress(f"{len(texts)} texts from {label}: {lengths.mean():.1f} tokens mean (max {lengths.max()}), "
             f"{per_text.mean() / 1e6:.0f} MFLOP per sentence")

    progress(f"GEMM peaks ({config.device}) ...")
    peak_runs = [measure_peaks(config.gemm_size, config.gemm_repeats, config.device)]
    out["peaks"] = merge_peaks(peak_runs)
    progress(f"  {out['peaks']['size']}³: fp32 {out['peaks']['fp32_gflops']:.1f} GFLOP/s, int8 {out['peaks']['int8_gops']:.1f} GOP/s")

    runners: dict[str, object] = {}
    triton = None
    try:
        for path in paths:
            try:
                if path == BASELINE_PATH:
                    runners[path] = sentence_transformers_path(config.model, config.device)
                elif path in ONNX_PATHS:
                    runners[path] = onnx_path(path, export, config.device)
            except Exception as error:  # noqa: BLE001 - record and go on with the other paths
                out["errors"].append({"path": path, "error": f"{type(error).__name__}: {error}"})
        triton_paths = [p for p in paths if p in TRITON_PATHS]
        if triton_paths:
            from lmrec.server.triton_launcher import TritonConfig, TritonProcess

            repository = work / "triton" / "model_repository"
            progress(f"starting Triton with {', '.join(triton_model_name(p) for p in triton_paths)} ...")
            try:
                kind = "KIND_GPU" if config.device == "cuda" else "KIND_CPU"
                out["triton_configs"] = write_triton_repository(work / "triton", export, triton_paths, kind)
                triton = TritonProcess(TritonConfig(repository=repository,
                                                    models=tuple(triton_model_name(p) for p in triton_paths),
                                                    startup_timeout_s=config.triton_startup_timeout_s)).start()
                for p in triton_paths:
                    runners[p] = TritonPath(p, triton.grpc_url, triton_model_name(p))
            except Exception as error:  # noqa: BLE001
                for p in triton_paths:
                    out["errors"].append({"path": p, "error": f"{type(error).__name__}: {error}"})
        if INFINITY_PATH in paths:
            from .peers.infinity import InfinityServer, installed_version

            progress("starting infinity-emb ...")
            try:
                server = InfinityServer(config.model, venv=config.infinity_venv,
                                        batch_size=max(64, *config.batch_sizes), log_dir=work / "infinity",
                                        device=config.device).start()
                runners[INFINITY_PATH] = InfinityPath(server)
                out["infinity_version"] = installed_version(config.infinity_venv)
            except Exception as error:  # noqa: BLE001
                out["errors"].append({"path": INFINITY_PATH, "error": f"{type(error).__name__}: {error}"})

        order = [p for p in paths if p in runners]
        if not order:  # nothing can run: an earlier run's results stay as they were
            raise NothingMeasured("no requested path could run, nothing written: "
                                  + _first_lines(out["errors"]))
        per_cell: dict[tuple[str, int, int], list[dict]] = {}
        for round_index in range(config.rounds):
            shift = round_index % max(1, len(order))
            for path in order[shift:] + order[:shift]:
                runner = runners[path]
                for batch in config.batch_sizes:
                    for concurrency in (config.concurrency if runner.served else (1,)):
                        try:
                            result = _summarise(runner.run(chunks[batch], concurrency, config), chunks[batch])
                        except Exception as error:  # noqa: BLE001
                            out["errors"].append({"path": path, "batch": batch, "concurrency": concurrency,
                                                  "round": round_index + 1, "error": f"{type(error).__name__}: {error}"})
                            progress(f"  {path} b={batch} c={concurrency}: FAILED {error}")
                            continue
                        per_cell.setdefault((path, batch, concurrency), []).append(result)
                        progress(f"[round {round_index + 1}/{config.rounds}] {path:<21} b={batch:<3} c={concurrency:<2} "
                                 f"{result['sentences_per_s']:8.1f} sent/s  p50 {result['p50_ms']:7.1f} ms  "
                                 f"p99 {result['p99_ms']:7.1f} ms  {result['gflop_per_s']:6.1f} GFLOP/s")
                # Partial results after every path: a long run that stops still leaves its numbers.
                out["records"] = [_median_record(p, b, c, r) for (p, b, c), r in per_cell.items()]
                out["seconds"] = round(time.perf_counter() - started, 1)
                if out["records"]:
                    _finish(out)
                    write_results(out, config.out_dir, config.name)
            out["rounds_done"] = round_index + 1
    finally:
        for runner in runners.values():
            try:
                runner.close()
            except Exception:  # noqa: BLE001
                pass
        if triton is not None:
            triton.stop()

    if not out["records"]:
        raise NothingMeasured("no path produced a measurement, nothing written: " + _first_lines(out["errors"]))
    progress("GEMM peaks again ...")
    peak_runs.append(measure_peaks(config.gemm_size, config.gemm_repeats, config.device))
    out["peaks"] = merge_peaks(peak_runs)
    out["seconds"] = round(time.perf_counter() - started, 1)
    _finish(out)
    write_results(out, config.out_dir, config.name)
    return out


def _first_lines(errors: list[dict], most: int = 3) -> str:
    """The first line of the first `most` recorded errors, on one line."""
    shown = [f"{e['path']}: {(str(e['error']).splitlines() or [''])[0]}" for e in errors[:most]]
    return "; ".join(shown) + (f" (and {len(errors) - most} more)" if len(errors) > most else "")


def _drop_paths_without_cuda(paths: tuple[str, ...], errors: list, progress) -> tuple[str, ...]:
    """The ONNX and Triton paths run through ONNX Runtime's CUDA provider on a GPU run. Any that would not
    run there (all of them where onnxruntime lacks the provider; the int8 ones always) is recorded as an
    error up front, and nothing is exported for it, rather than measured on the CPU under a GPU label."""
    from lmrec.encoder import INT8_ON_CUDA, execution_providers

    reasons = {p: f"{INT8_ON_CUDA}: int8 paths are not measured on a GPU" for p in paths if p in INT8_PATHS}
    try:
        if any(p in ONNX_PATHS or p in TRITON_PATHS for p in paths):
            execution_providers("cuda")
    except RuntimeError as error:
        reasons.update({p: str(error) for p in paths if (p in ONNX_PATHS or p in TRITON_PATHS) and p not in reasons})
    for path, reason in reasons.items():
        errors.append({"path": path, "error": reason})
        progress(f"{path}: {reason}")
    return tuple(p for p in paths if p not in reasons)


# --- command line ------------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_arguments(parser) -> None:
    parser.add_argument("--paths", default="all",
                        help=f"comma list of {', '.join(ALL_PATHS)} or groups {', '.join(PATH_ALIASES)} (default: all)")
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="texts per request")
    parser.add_argument("--concurrency", default="1,2,4,8", help="requests in flight (served paths)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="round-robin rounds; each cell reports the median")
    parser.add_argument("--n-texts", type=positive_int, default=512, help="texts sampled (half items, half user profiles)")
    from lmrec.cli import DATASETS

    parser.add_argument("--dataset", default="ml-100k", choices=tuple(d for d in DATASETS if d != "synthetic"),
                        help="whose item texts and user profiles are encoded (default: ml-100k); your own data "
                             "with --data-dir, a generic CSV with --csv KEY=VALUE as for `lmrec build`")
    parser.add_argument("--data-dir", help="the data set folder (default: ../shared/data/<dataset> for MovieLens)")
    parser.add_argument("--csv", action="append", metavar="KEY=VALUE", help="generic CSV layout (repeatable), as for `lmrec build`")
    parser.add_argument("--synthetic-users", type=non_negative_int, default=0,
                        help="smoke run: a synthetic data set of N users instead of MovieLens")
    parser.add_argument("--model", help="sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--work-dir", default="benchmarks/results/tmp/encoder",
                        help="export cache, Triton model repository, server logs")
    parser.add_argument("--export-dir", help="use this fp32 + int8 export instead of exporting")
    parser.add_argument("--min-seconds", type=positive_float, default=2.0, help="per cell")
    parser.add_argument("--min-requests", type=positive_int, default=8, help="per cell")
    parser.add_argument("--max-seconds", type=positive_float, default=15.0, help="per cell (in-flight requests still finish)")
    parser.add_argument("--gemm-size", type=positive_int, default=2048, help="GEMM peak size (at least 8192 on --device cuda)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda: sentence-transformers and infinity-emb on the GPU, ONNX Runtime's CUDA "
                             "provider (needs onnxruntime-gpu), Triton instances KIND_GPU, GEMM peaks on the GPU")
    parser.add_argument("--infinity-venv", help="infinity-emb's venv (default: .venv-infinity at the repo root)")
    parser.add_argument("--seed", type=seed_value, default=42)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="encoder", help="result file stem")


def config_from_args(args) -> EncoderBenchConfig:
    from lmrec.cli import CliError

    try:
        paths = expand_paths(p for p in args.paths.split(",") if p)
    except ValueError as error:
        raise CliError(str(error)) from None
    if not paths:
        raise CliError(f"--paths {args.paths!r} names no path (known: {', '.join(ALL_PATHS)}; "
                       f"groups: {', '.join(PATH_ALIASES)})")
    try:
        batch_sizes, concurrency = _ints(args.batch_sizes), _ints(args.concurrency)
    except ValueError:
        raise CliError(f"--batch-sizes {args.batch_sizes!r} and --concurrency {args.concurrency!r} need "
                       "comma-separated positive integers (e.g. 1,8,32)") from None
    if not batch_sizes or min(batch_sizes) < 1 or not concurrency or min(concurrency) < 1:
        raise CliError("--batch-sizes and --concurrency need positive integers")
    if max(batch_sizes) > 64 and any(p in TRITON_PATHS for p in paths):
        raise CliError("--batch-sizes: the served text_encoder takes at most 64 texts per request (max_batch_size)")
    if args.rounds < 1:
        raise CliError("--rounds must be >= 1")
    if args.min_seconds > args.max_seconds:
        raise CliError(f"--min-seconds {args.min_seconds:g} is more than --max-seconds {args.max_seconds:g}: each "
                       "cell is measured for at least the one and at most the other")
    check_results_file(args.out, args.name)
    from lmrec.encoder import DEVICES

    if args.device not in DEVICES:
        raise CliError(f"--device {args.device}: expected one of {', '.join(DEVICES)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CliError("--device cuda: torch sees no CUDA GPU on this machine (run with --device cpu)")
    extra: dict = {}
    if args.synthetic_users and (args.data_dir or args.csv or args.dataset != "ml-100k"):
        raise CliError("--synthetic-users replaces the data set: leave out --dataset, --data-dir and --csv")
    if args.synthetic_users:
        from lmrec.export.loaders import SyntheticConfig

        n = args.synthetic_users
        extra["synthetic"] = SyntheticConfig(n_users=n, n_items=max(30, n), min_interactions=3, max_interactions=10)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise CliError(f"--data-dir {args.data_dir} is not a directory")
        extra["data_dir"] = Path(args.data_dir)
    elif args.dataset in ("ml-100k", "ml-latest-small"):
        extra["data_dir"] = REPO_ROOT.parent / "shared" / "data" / args.dataset
    elif not args.synthetic_users:
        raise CliError(f"--dataset {args.dataset} needs --data-dir (the folder holding its files)")
    if args.csv:
        from lmrec.cli import _csv_columns

        extra["csv"] = _csv_columns(args.csv, args.dataset)
    if args.model:
        extra["model"] = args.model
    if args.export_dir:
        extra["export_dir"] = Path(args.export_dir)
    if args.infinity_venv:
        extra["infinity_venv"] = Path(args.infinity_venv)
    return EncoderBenchConfig(paths=paths, batch_sizes=batch_sizes, concurrency=concurrency, rounds=args.rounds,
                              n_texts=args.n_texts, dataset=args.dataset, work_dir=Path(args.work_dir),
                              out_dir=Path(args.out), name=args.name, seed=args.seed, min_seconds=args.min_seconds,
                              min_requests=args.min_requests, max_seconds=args.max_seconds, gemm_size=args.gemm_size,
                              device=args.device, **extra)
