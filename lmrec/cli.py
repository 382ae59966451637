"""`lmrec` command line: each verb builds a typed config and calls one entry point.

Verbs: build, serve, gateway, demo, evaluate, profile, bench, cache (offline/ops); the verbs that talk to a
running gateway (recommend, similar, event, add-items, forget, deploy, status) live in cli_client.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from lmrec.cli_client import CliError, add_client_verbs, gateway_address_of  # one error type for every verb
from lmrec.cli_types import (finite_number, gateway_address, int_in_range, non_negative_float, positive_float,
                             positive_int, seed_value)
from lmrec.encoder import DEVICES
from lmrec.export.splits import PROTOCOLS

DATASETS = ("synthetic", "ml-100k", "ml-latest-small", "movielens-csv", "csv")


_MAIN_ARGV: list[str] | None = None  # what `main(argv)` was given, when called with a list


def command_line(program: str = "lmrec") -> str:
    """The command as one shell-quoted line, so that a recorded command can be pasted back."""
    import shlex

    return shlex.join([*program.split(), *(sys.argv[1:] if _MAIN_ARGV is None else _MAIN_ARGV)])


def invoked_command() -> str | None:
    """The `lmrec ...` command this process runs (from the shell or through `main(argv)`), or None when a
    suite was called from Python, where there is no command to record."""
    if _MAIN_ARGV is not None or (Path(sys.argv[0]).name == "lmrec" and sys.argv[1:]):
        return command_line()
    if sys.argv[1:] and Path(sys.argv[0]).parts[-2:] == ("lmrec", "cli.py"):  # python -m lmrec.cli ...
        return command_line("python -m lmrec.cli")
    return None


# 0: the system picks a free port.
port_number = int_in_range(0, 65535, "a port number")


def nearest_existing(path: Path) -> Path:
    """`path`, or its closest ancestor that exists (the folders below it are still to be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_file(option: str, path: Path) -> None:
    """Refuse an output path now rather than after the measurements meant for it: a folder, or a file in
    a folder that cannot be created or written."""
    if path.is_dir():
        raise CliError(f"{option} {path} is a directory; give a file name")
    existing = nearest_existing(path.parent.absolute())  # the folders to be made are made with the file, not now
    if not existing.is_dir():
        raise CliError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise CliError(f"{option} {path}: {existing} is not writable")


def state_dir_option(value: str | None) -> Path | None:
    """`--state-dir`: a folder, or a path whose missing folders the event store will make; refused before
    anything starts (the store opens only once Triton answers, and `lmrec serve` starts Triton first)."""
    if not value:
        return None
    path = Path(value)
    existing = nearest_existing(path.absolute())
    if not existing.is_dir():
        what = "is a file" if existing == path.absolute() else f"is under {existing}, which is a file"
        raise CliError(f"--state-dir {value} {what}: it must be a folder, or not exist yet")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"--state-dir {value}: {existing} is not writable")
    return path


# The gateway reads 0 tags as "the default", so 0 is refused here.
tag_count = int_in_range(1, 50, "the number of interest tags")


def _default_build_dir(dataset: str) -> Path:
    return Path("build") / dataset


def _data_config(args):
    from lmrec.export.loaders import DataConfig

    if args.dataset != "synthetic" and args.data_dir is None:
        raise CliError(f"--dataset {args.dataset} needs --data-dir (the folder holding its files)")
    if args.dataset == "synthetic" and args.data_dir is not None:  # the synthetic data would be used instead
        raise CliError(f"--data-dir {args.data_dir} needs --dataset naming how to read it "
                       f"({', '.join(d for d in DATASETS if d != 'synthetic')})")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CliError(f"--data-dir {args.data_dir} is not a directory")
    return DataConfig(dataset=args.dataset, data_dir=Path(args.data_dir) if args.data_dir else None,
                      min_user_interactions=args.min_user_interactions,
                      min_item_interactions=args.min_item_interactions,
                      implicit_threshold=args.implicit_threshold, csv=_csv_columns(args.csv, args.dataset))


def _csv_columns(pairs: list[str] | None, dataset: str):
    """`--csv user=uid --csv rating=none` → CsvColumns; 'none' clears an optional column. Only the generic
    CSV reader has a layout to set: for any other data set the options would be silently ignored."""
    if not pairs:
        return None
    if dataset != "csv":
        raise CliError(f"--csv describes a generic CSV layout; --dataset {dataset} has its own files (use --dataset csv)")
    from dataclasses import fields

    from lmrec.export.loaders import CsvColumns

    known = {f.name: f for f in fields(CsvColumns)}
    values: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise CliError(f"--csv {pair!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        if key == "rating_range":
            try:
                low, high = (float(v) for v in value.split(","))
            except ValueError:
                raise CliError(f"--csv rating_range={value!r}: expected LOW,HIGH (e.g. 1,5)") from None
            if not low < high:  # every rating would fall outside and be dropped
                raise CliError(f"--csv rating_range={value!r}: LOW must be below HIGH (e.g. 1,5)")
            values[key] = (low, high)
        elif key == "delimiter":
            delimiter = {"\\t": "\t", "tab": "\t"}.get(value, value)
            if len(delimiter) != 1:
                raise CliError(f"--csv delimiter={value!r}: expected one character (or tab)")
            values[key] = delimiter
        elif key == "encoding":
            import codecs

            try:  # rot13, base64 and the like are codecs too, but not ones that decode a file's bytes to text
                if not getattr(codecs.lookup(value), "_is_text_encoding", True):
                    raise LookupError(value)
            except LookupError:
                raise CliError(f"--csv encoding={value!r}: not a text encoding Python knows (e.g. utf-8, latin-1)") from None
            values[key] = value
        elif key == "category_separator":
            if not value:  # str.split('') raises ValueError deep in the reader
                raise CliError("--csv category_separator='': expected the text between categories (e.g. '|' or ';')")
            values[key] = value
        elif value.lower() == "none":
            if known[key].default is not None and "None" not in str(known[key].type):
                raise CliError(f"--csv {key}=none: {key} is required (it names the column or file to read)")
            values[key] = None
        elif key.endswith("_file") and not value.strip():  # no file has that name ('' is the data folder)
            optional = known[key].default is None or "None" in str(known[key].type)
            raise CliError(f"--csv {key}={value!r}: expected a file name" + (f" ({key}=none clears it)" if optional else ""))
        else:
            values[key] = value
    return CsvColumns(**values)


def _add_data_arguments(parser: argparse.ArgumentParser, *, default_dataset: str | None = "synthetic",
                        dataset_help: str = "data set (default: the embedded synthetic one)") -> None:
    parser.add_argument("--dataset", choices=DATASETS, default=default_dataset, help=dataset_help)
    parser.add_argument("--data-dir", help="folder with the data set's files (all but synthetic)")
    parser.add_argument("--min-user-interactions", type=int, default=0, metavar="N")
    parser.add_argument("--min-item-interactions", type=int, default=0, metavar="N")
    parser.add_argument("--implicit-threshold", type=finite_number("the rating threshold"), default=None,
                        metavar="RATING",
                        help="keep only interactions with rating >= RATING (default: every rating counts)")
    parser.add_argument("--csv", action="append", metavar="KEY=VALUE",
                        help="generic CSV layout (repeatable): interactions_file, items_file, users_file, delimiter, "
                             "encoding, user, item, rating, timestamp, item_id, title, categories, category_separator, "
                             "description, year, user_id, rating_range=LOW,HIGH; 'none' clears an optional column")


def _build_config(args):
    from lmrec.export.build import BuildConfig

    if args.device == "cuda" and args.precision == "int8":  # before the data loads; build_bundle checks it too
        from lmrec.encoder import INT8_ON_CUDA

        raise CliError(f"--device cuda serves the fp32 encoder (--precision fp32): {INT8_ON_CUDA}")
    output_dir = Path(args.build_dir or _default_build_dir(args.dataset))
    existing = nearest_existing(output_dir)
    if not existing.is_dir():
        raise CliError(f"--build-dir {output_dir}: {existing} is a file, not a folder")
    kwargs = dict(data=_data_config(args), output_dir=output_dir,
                  precision=args.precision, version=args.version, fused=args.fused, device=args.device)
    if args.finetune_steps is not None:
        if args.finetune_steps < 1:
            raise CliError(f"--finetune-steps must be >= 1, got {args.finetune_steps}")
        if not args.fused:  # only the fused ranker's encoder is fine-tuned; the option would do nothing
            raise CliError("--finetune-steps needs --fused: only a fused build fine-tunes the encoder")
        kwargs["finetune"] = {"steps": args.finetune_steps}
    if args.for_new_items:
        if not args.fused:
            raise CliError("--for-new-items needs --fused: it trains the fusion ranker, which only a fused build has")
        kwargs["for_new_items"] = True
    if args.encoder:
        kwargs["encoder_model"] = args.encoder
    return BuildConfig(**kwargs)


def cmd_build(args) -> int:
    from lmrec.export.build import build_bundle
    from lmrec.stopping import sigterm_as_exit

    with sigterm_as_exit():  # a build stopped by SIGTERM still removes its half-written version
        build_bundle(_build_config(args))
    return 0


def _serving_config(args):
    """The gateway's caching and overlap options (`lmrec serve` and `lmrec gateway` take the same ones)."""
    from lmrec.server.recommend import ServingConfig

    return ServingConfig(cache_user_vectors=not args.no_user_cache, cache_answers=not args.no_answer_cache,
                         prepare_during_encode=not args.no_prepare_during_encode, **(
        {} if args.candidate_cache_users is None else {"candidate_cache_users": args.candidate_cache_users}))


def _add_serving_arguments(p) -> None:
    p.add_argument("--no-user-cache", action="store_true",
                   help="encode every profile, compute every candidate set and read every user from the event store "
                        "(benchmark baseline)")
    p.add_argument("--candidate-cache-users", type=int, default=None,
                   help="returning users whose candidates and features, resolved history and last answer are "
                        "kept for their next request (0: off; default 4096, ServingConfig.candidate_cache_users)")
    p.add_argument("--no-answer-cache", action="store_true",
                   help="keep a returning user's candidates and vector, but compute their answer (ranking, "
                        "explanations) on every request (ServingConfig.cache_answers)")
    p.add_argument("--no-prepare-during-encode", action="store_true",
                   help="with a fused bundle, compute the ranker features that need no profile vector after "
                        "Triton's encode instead of in low-priority threads during it; for a machine whose "
                        "cores other processes keep busy (ServingConfig.prepare_during_encode)")


def cmd_serve(args) -> int:
    from lmrec.server.metrics import configure_logging
    from lmrec.server.serve import ServeConfig, serve

    # The whole config first: a bad value is refused before Triton starts (serve() checks the bundle and the
    # ports before it starts Triton).
    config = ServeConfig(build_dir=Path(args.build_dir), host=args.host, port=args.port,
                         bundle_version=args.bundle_version, metrics_port=args.metrics_port,
                         state_dir=state_dir_option(args.state_dir), serving=_serving_config(args))
    configure_logging("DEBUG" if args.verbose else "INFO")  # JSON lines with request ids, as `lmrec gateway`
    serve(config)
    return 0


def cmd_gateway(args) -> int:
    from lmrec.server.gateway import GatewayConfig, serve_gateway
    from lmrec.server.metrics import configure_logging
    from lmrec.server.model_control import TritonUnreachable
    from lmrec.server.serve import check_ports_free

    def ready(port: int) -> None:
        print(f"gateway serving on {args.host}:{port}", flush=True)

    # The whole config first: a bad value is refused before logging is reconfigured or anything starts.
    serving = _serving_config(args)
    config = GatewayConfig(build_dir=Path(args.build_dir), triton_url=args.triton_url, host=args.host,
                           port=args.port, bundle_version=args.bundle_version, retriever=args.retriever,
                           state_dir=state_dir_option(args.state_dir),
                           event_store=args.event_store, metrics_port=args.metrics_port, serving=serving)
    check_ports_free(config.host, config.port, config.metrics_port)  # before the bundle loads
    for handler in list(logging.getLogger().handlers):  # one format on the root logger: the JSON lines
        logging.getLogger().removeHandler(handler)
    configure_logging("DEBUG" if args.verbose else "INFO")
    try:
        serve_gateway(config, on_ready=ready)
    except TritonUnreachable as error:  # `lmrec serve` starts its own Triton: only here is the address the user's
        raise CliError(f"--triton-url {args.triton_url}: {error}") from None
    return 0


def cmd_demo(args) -> int:
    from lmrec.demo import DemoConfig, run_demo

    run_demo(DemoConfig(build=_build_config(args), rebuild=args.rebuild))
    return 0


def cmd_evaluate(args) -> int:
    from lmrec.export.evaluate import EvaluateConfig, format_table, records_to_json, run_evaluation

    methods = tuple(m for chunk in args.method for m in chunk.split(",") if m)
    if args.json:
        writable_file("--json", Path(args.json))
    config = EvaluateConfig(data=_data_config(args), protocol=args.protocol, methods=methods, seed=args.seed,
                            model_params=_evaluation_params(args.param, methods, args.protocol))
    records = run_evaluation(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(records))
    if args.json:
        payload = records_to_json(records, command=command_line())
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


def _evaluation_params(pairs: list[str] | None, methods: tuple[str, ...], protocol: str) -> dict[str, dict]:
    """`--param` settings, and the fused methods trained for what the protocol tests (as the quality suite
    trains them) unless a `--param fused.holdout=...` or the like says otherwise."""
    from lmrec.export.models.fused import settings_for_protocol

    params = _model_params(pairs, methods)
    fused = {**settings_for_protocol(protocol), **params.get("fused", {})}
    if "fused" in methods:
        params["fused"] = fused
    if "fused-int8" in methods:  # the int8 encoder serving the same fit: fused's settings, then its own
        params["fused-int8"] = {**fused, **params.get("fused-int8", {})}
    return params


def _model_params(pairs: list[str] | None, methods: tuple[str, ...]) -> dict[str, dict]:
    """`--param als.factors=128` → {"als": {"factors": 128}}; fixed params skip tuning for that method."""
    params: dict[str, dict] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        method, dot, name = key.rpartition(".")
        if not sep or not dot or method not in methods:
            raise CliError(f"--param {pair!r}: expected METHOD.NAME=VALUE with METHOD one of {', '.join(methods)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(method, {})[name] = value
    return params


PROFILE_DEFAULT_TIMEOUT_S = 10.0


def cmd_profile(args) -> int:
    if not args.build_dir:  # ask the running gateway (the profile as served, with recorded events)
        from lmrec.cli_client import cmd_remote_profile

        if args.bundle_version is not None:
            raise CliError(f"--bundle-version {args.bundle_version} reads one bundle of a build offline: it needs "
                           "--build-dir (the gateway answers from the bundle it serves)")
        args.address = gateway_address_of(args.address)  # in place: the error hint names it
        if args.timeout is None:
            args.timeout = PROFILE_DEFAULT_TIMEOUT_S
        return cmd_remote_profile(args)
    if args.address is not None or args.timeout is not None:  # they would be ignored: nothing is asked
        raise CliError("--address and --timeout ask a running gateway, --build-dir reads a build offline: "
                       "pass one or the other")
    from lmrec.profiles import ProfileConfig, describe_profile

    print(describe_profile(ProfileConfig(build_dir=Path(args.build_dir), user_id=args.user, top_tags=args.tags,
                                         bundle_version=args.bundle_version)))
    return 0


def cmd_cache(args) -> int:
    import time

    from lmrec.export.cache import PruneConfig, cache_dir, list_cache, prune_cache

    if not args.prune:
        if args.max_gb is not None or args.older_than_days is not None or args.dry_run:
            raise CliError("--max-gb, --older-than-days and --dry-run go with --prune")
        entries = list_cache()
        now = time.time()
        for entry in entries:
            print(f"{entry.kind:10s} {entry.path.name:24s} {entry.bytes / 2**20:8.1f} MiB  "
                  f"last used {(now - entry.last_used) / 86400:6.1f} days ago{'  (staging)' if entry.staging else ''}")
        print(f"{len(entries)} entries, {sum(e.bytes for e in entries) / 2**30:.2f} GiB in {cache_dir()}")
        return 0
    if args.max_gb is None and args.older_than_days is None:
        raise CliError("--prune needs --max-gb GB, --older-than-days DAYS, or both")
    config = PruneConfig(max_bytes=None if args.max_gb is None else int(args.max_gb * 2**30),
                         older_than_days=args.older_than_days, dry_run=args.dry_run)
    before = list_cache()
    removed = prune_cache(config)
    gone = sum(e.bytes for e in removed)
    print(f"{'would remove' if args.dry_run else 'removed'} {len(removed)} entries ({gone / 2**30:.2f} GiB); "
          f"{len(before) - len(removed)} entries, {(sum(e.bytes for e in before) - gone) / 2**30:.2f} GiB "
          f"{'would stay' if args.dry_run else 'left'} in {cache_dir()}")
    return 0


# `lmrec bench SUITE ...`: each suite module owns its arguments (add_arguments / config_from_args / run).
BENCH_SUITES = {
    "quality": ("lmrec.benchmarks.quality", "run_quality"),
    "encoder": ("lmrec.benchmarks.encoder", "run_encoder_bench"),
    "triton": ("lmrec.benchmarks.triton_perf", "run_triton_perf"),
    "ann": ("lmrec.benchmarks.ann", "run_ann"),
    "gateway": ("lmrec.benchmarks.gateway_load", "run_gateway_load"),
}


def cmd_bench(args) -> int:
    import importlib

    module_name, runner = BENCH_SUITES[args.suite]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"lmrec bench {args.suite}")
    module.add_arguments(parser)
    config = module.config_from_args(parser.parse_args(args.suite_args))
    from lmrec.stopping import sigterm_as_exit

    with sigterm_as_exit():  # a suite stopped by SIGTERM still stops the servers it started
        payload = getattr(module, runner)(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"wrote {Path(config.out_dir) / config.name}.json, .md and .png")
    for bar in payload.get("bars", []):
        value = "n/a" if bar.get("value") is None else f"{bar['value']:.3f}"
        verdict = "info" if bar.get("met") is None and bar.get("note") else "met " if bar.get("met") else "MISS"
        print(f"  {verdict} {bar['bar']}: {value} (needs {bar['needed']}{'; ' + bar['note'] if bar.get('note') else ''})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrec", description="Language-model recommender: build, serve, query, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def add_build_arguments(p):
        _add_data_arguments(p)
        p.add_argument("--build-dir", help="output folder (default: build/<dataset>)")
        p.add_argument("--encoder", help="Hugging Face model id or local folder (default: the packaged all-MiniLM-L6-v2)")
        p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                       help="which exported encoder Triton serves and the index is built with")
        p.add_argument("--version", type=int, default=None, help="version number to write (default: next free)")
        p.add_argument("--device", choices=DEVICES, default="cpu",
                       help="where Triton runs the text encoder: cuda writes KIND_GPU instances (fp32 only; the "
                            "serving machine needs onnxruntime-gpu); the build itself needs no GPU")
        p.add_argument("--fused", action="store_true",
                       help="fine-tune the encoder and train the neural fusion ranker (served as Triton `ranker`)")
        p.add_argument("--finetune-steps", type=int, default=None, metavar="N",
                       help="fine-tuning steps with --fused (default 300: ~18 min on ml-100k, 2 cores)")
        p.add_argument("--for-new-items", action="store_true",
                       help="with --fused: train the ranker for items added later with AddItems too (10%% of "
                            "the items are made new in its hold-out; their predicted demand becomes a feature)")

    p = verbs.add_parser("build", help="load data, export the encoder, build index + ALS, write version N")
    add_build_arguments(p)
    p.set_defaults(run=cmd_build)

    p = verbs.add_parser("serve", help="start Triton and the gateway on a build folder")
    p.add_argument("--build-dir", required=True, help="what `lmrec build` wrote (its bundles and model repository)")
    p.add_argument("--host", default="127.0.0.1", help="the gateway's address to listen on (0.0.0.0: every "
                                                       "interface); default 127.0.0.1")
    p.add_argument("--port", type=port_number, default=50051, help="the gateway's port; default 50051, 0 picks a "
                                                                   "free one (printed)")
    p.add_argument("--bundle-version", type=int, default=None,
                   help="the bundle to serve; default the newest complete one (a rollback made with `lmrec deploy` "
                        "does not outlive a restart without this)")
    p.add_argument("--state-dir", help="events and added items (SQLite, WAL); default <build-dir>/gateway_state")
    p.add_argument("--metrics-port", type=port_number, default=None, help="serve Prometheus /metrics on this port (0: free)")
    _add_serving_arguments(p)
    p.set_defaults(run=cmd_serve)

    p = verbs.add_parser("gateway", help="start only the gateway, against a running Triton")
    p.add_argument("--build-dir", required=True, help="what `lmrec build` wrote")
    p.add_argument("--triton-url", type=gateway_address, required=True, help="Triton gRPC address, host:port")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on; default 127.0.0.1")
    p.add_argument("--port", type=port_number, default=50051, help="default 50051; 0 picks a free port (printed)")
    p.add_argument("--bundle-version", type=int, default=None, help="the bundle to serve; default the newest complete one")
    p.add_argument("--retriever", choices=("hnsw", "exact"), default="hnsw")
    p.add_argument("--state-dir", help="events and added items (SQLite, WAL); default <build-dir>/gateway_state")
    p.add_argument("--event-store", choices=("sqlite", "memory"), default="sqlite")
    p.add_argument("--metrics-port", type=port_number, default=None, help="serve Prometheus /metrics on this port (0: free)")
    _add_serving_arguments(p)
    p.set_defaults(run=cmd_gateway)

    p = verbs.add_parser("demo", help="build (if needed), serve, send example requests, shut down")
    add_build_arguments(p)
    p.add_argument("--rebuild", action="store_true", help="build a new version even if one exists")
    p.set_defaults(run=cmd_demo)

    p = verbs.add_parser("evaluate", help="offline evaluation with full ranking")
    _add_data_arguments(p)
    p.add_argument("--protocol", choices=PROTOCOLS, default="temporal-loo")
    p.add_argument("--method", action="append", required=True,
                   help="method name(s): pop, itemknn, als, bpr, ease, sequential, kg, lm-pretrained, lm-finetuned, "
                        "fused, fused-int8 (repeat or comma-separate)")
    p.add_argument("--seed", type=seed_value, default=42)
    p.add_argument("--param", action="append", metavar="METHOD.NAME=VALUE",
                   help="fix a hyper-parameter (repeatable), e.g. lm-finetuned.steps=400; fixed methods skip tuning")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.set_defaults(run=cmd_evaluate)

    p = verbs.add_parser("profile", help="a user's profile text, recent items and LM interest tags "
                                         "(from the gateway at --address, or offline from --build-dir)")
    p.add_argument("--build-dir", help="read the build offline instead of asking the gateway")
    p.add_argument("--address", type=gateway_address, default=None,
                   help="the gateway to ask (default: $LMREC_ADDRESS or 127.0.0.1:50051)")
    p.add_argument("--timeout", type=positive_float, default=None, help=f"seconds (default {PROFILE_DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--user", required=True)
    p.add_argument("--tags", type=tag_count, default=5, help="how many interest tags (1 to 50)")
    p.add_argument("--bundle-version", type=positive_int, default=None,
                   help="with --build-dir: that bundle (default: the newest)")
    p.set_defaults(run=cmd_profile)

    p = verbs.add_parser("bench", help="run a benchmark suite (results under benchmarks/results/); "
                                       "`lmrec bench SUITE --help` lists its options")
    p.add_argument("suite", choices=tuple(BENCH_SUITES))
    p.add_argument("suite_args", nargs=argparse.REMAINDER, help="the suite's own options")
    p.set_defaults(run=cmd_bench)

    p = verbs.add_parser("cache", help="list the cached encoder exports and fine-tuned models, or prune them "
                                       "(least recently used first)")
    p.add_argument("--prune", action="store_true", help="remove entries (default: only list them)")
    p.add_argument("--max-gb", type=non_negative_float, default=None, help="with --prune: keep the cache under this size")
    p.add_argument("--older-than-days", type=non_negative_float, default=None,
                   help="with --prune: remove entries not used for this many days")
    p.add_argument("--dry-run", action="store_true", help="with --prune: say what would go, remove nothing")
    p.set_defaults(run=cmd_cache)

    add_client_verbs(verbs)
    return parser


def _hint(error: BaseException, args) -> str:
    """What to do about an error whose own text does not say: no gateway at the address a verb called."""
    from lmrec.client.client import ClientError

    if isinstance(error, ClientError) and error.code == "UNAVAILABLE" and "connect" in error.details.lower():
        return (f"\n  no gateway answers at {args.address}: start one (`lmrec serve --build-dir BUILD`) or pass "
                "--address HOST:PORT (or set LMREC_ADDRESS)")
    return ""


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe nobody reads any more (poll reports an error on its write end);
    if so, it is pointed at /dev/null, so that the interpreter's last flush does not raise again."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll on this platform, or stdout is not a real file
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return gone


def main(argv: list[str] | None = None) -> int:
    global _MAIN_ARGV
    _MAIN_ARGV = None if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lmrec.errors import user_facing_errors

    try:
        code = args.run(args)
        sys.stdout.flush()  # piped output is block-buffered: a closed reader shows here, not at exit
        return code
    except BrokenPipeError as error:
        if _stdout_reader_gone():  # `lmrec status | head -3`: the reader has what it wanted
            return 128 + signal.SIGPIPE
        print(f"lmrec {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except CliError as error:
        print(f"lmrec {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except user_facing_errors() as error:
        print(f"lmrec {args.verb}: error: {error}{_hint(error, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
