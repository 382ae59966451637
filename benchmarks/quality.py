"""Quality suite: every method on every protocol and data set, full ranking, one harness.

`lmrec bench quality` → benchmarks/results/quality.{json,md,png}. Baselines are tuned on validation
first; the fused model then receives each data set's tuned signal settings (no test data involved).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmrec.cli import invoked_command
from lmrec.cli_types import non_negative_int, seed_value
from lmrec.export.metrics import PER_USER_METRIC, paired_bootstrap_ratio
from lmrec.export.models.fused import settings_for_protocol
from lmrec.export.splits import PROTOCOLS

from .machine import machine_facts
from .report import bar_chart, markdown_table, write_report

if TYPE_CHECKING:
    from lmrec.export.loaders import DataConfig

BASELINES = ("pop", "itemknn", "als", "bpr", "ease", "sequential")
LM_METHODS = ("lm-pretrained", "lm-finetuned")
FUSED_METHODS = ("fused", "fused-int8")
ALL_METHODS = BASELINES + LM_METHODS + FUSED_METHODS
FUSED_SIGNALS = ("als", "ease", "itemknn", "sequential")
# Each NDCG@10 ratio bar also gets a paired bootstrap interval over the test users: a few hundred users
# with one target each move a ratio by several percent, and the interval says whether a bar's margin
# (or shortfall) is more than that.
INTERVAL_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
INTERVAL_NOTE = (f"² Of the ratio, with the test users drawn again with replacement (paired: the same users for both "
                 f"methods, {BOOTSTRAP_RESAMPLES} resamples), from each record's per-user NDCG@10; – where a record "
                 "has none (carried over from a run before they were kept), the two records are not of one test "
                 "set, the ratio is undefined in a resample, or it is not one of NDCG@10. The bar is judged on the "
                 "measured ratio.  ")


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    datasets: tuple[str, ...] = ("ml-100k", "ml-latest-small")
    data_root: Path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    protocols: tuple[str, ...] = PROTOCOLS
    methods: tuple[str, ...] = ALL_METHODS
    seed: int = 42
    finetune: dict = field(default_factory=dict)  # lm-finetuned settings, e.g. {"steps": 400}
    fused: dict = field(default_factory=dict)  # FusedRecommender settings for fused and fused-int8, e.g. {"candidates": 25}
    out_dir: Path = Path("benchmarks/results")
    name: str = "quality"
    synthetic_users: int = 0  # > 0: a smoke run on a small synthetic data set instead of MovieLens
    # One data set of your own (any loader: csv, movielens-csv, ml-100k, ...) instead of `datasets`;
    # its records are named after the data set (a CSV folder's name).
    data: DataConfig | None = None
    # A previous results JSON: its records for what this run does not measure (data set, protocol,
    # method) are carried over, marked with the file and command they came from.
    reuse: tuple[Path, ...] = ()


def _data_configs(config: QualityConfig) -> list:
    """What the run measures: a synthetic smoke set, your own data set, or the MovieLens folders."""
    from lmrec.export.loaders import DataConfig, SyntheticConfig

    if config.synthetic_users:
        n = config.synthetic_users
        return [DataConfig(dataset="synthetic", synthetic=SyntheticConfig(n_users=n, n_items=max(40, n),
                                                                          min_interactions=8, max_interactions=20))]
    if config.data is not None:
        return [config.data]
    configs = []
    for dataset in config.datasets:  # all checked before the first (long) one starts
        folder = config.data_root / dataset
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: the quality suite reads MovieLens from ../shared/data "
                                    "(or pass --data-root; for your own data, --dataset and --data-dir)")
        configs.append(DataConfig(dataset=dataset, data_dir=folder))
    return configs


def method_params(protocol: str, tuned: dict[str, dict], finetune: dict, overrides: dict | None = None) -> dict[str, dict]:
    """Fixed settings for the LM and fused methods, from the baselines tuned on validation (and
    `overrides`: fused settings given on the command line, chosen on validation beforehand)."""
    fused = {"signals": {m: tuned[m] for m in FUSED_SIGNALS if m in tuned}, **settings_for_protocol(protocol),
             "lm_params": dict(finetune)}
    fused.update(overrides or {})
    return {"lm-finetuned": dict(finetune), "fused": fused, "fused-int8": dict(fused)}


def tuned_signal_settings(measured, reused: list[dict], dataset: str, protocol: str) -> dict[str, dict]:
    """The baselines' settings as tuned on validation, which the fused methods take for their signals: from
    this run's records, or for a baseline it does not measure, from a --reuse file's record of it. Without
    the latter, re-measuring only `fused` against a published file would fit it with the default signals,
    not the model that file published."""
    tuned = {record.method: record.params for record in measured}
    for record in reused:
        if (record["dataset"], record["protocol"]) == (dataset, protocol) and record["method"] in FUSED_SIGNALS \
                and "params" in record:
            tuned.setdefault(record["method"], record["params"])
    return tuned


def run_quality(config: QualityConfig, *, progress=print) -> dict:
    from lmrec.export.evaluate import EvaluateConfig, check_methods, records_to_json, run_evaluation
    from lmrec.export.loaders import load_dataset
    from lmrec.export.splits import split_dataset

    started = time.perf_counter()
    out = {"suite": "quality", "command": invoked_command(),
           "machine": machine_facts(), "config": {"datasets": list(config.datasets), "protocols": list(config.protocols),
                                                 "methods": list(config.methods), "seed": config.seed,
                                                 "finetune": config.finetune, "fused": config.fused}, "records": []}
    if config.data is not None:  # how your own data set was read: loader, folder, CSV layout, filters
        out["config"]["data"] = {k: (str(v) if isinstance(v, Path) else v)
                                 for k, v in asdict(config.data).items() if k != "synthetic"}
    # Every data set loaded and split first: a split that cannot work (say, no user with enough
    # interactions for sparse-users) stops the run before hours of training, not after.
    work = []
    for data in _data_configs(config):
        dataset = load_dataset(data).dataset
        splits = [split_dataset(dataset, p, seed=config.seed) for p in config.protocols]
        for split in splits:  # and every method's settings, on every split (the baselines' grids as tuned)
            check_methods(config.methods, method_params(split.protocol, {}, config.finetune, config.fused),
                          dataset, split.train, config.seed)
        work.append((data, dataset, splits))
    reused = _reusable_records(config)  # read before this run overwrites any of them
    merged = out
    for data, dataset, splits in work:
        for protocol, split in zip(config.protocols, splits):
            baselines = tuple(m for m in config.methods if m in BASELINES)
            records = run_evaluation(EvaluateConfig(data=data, protocol=protocol, methods=baselines, seed=config.seed),
                                     dataset=dataset, split=split, progress=progress) if baselines else []
            tuned = tuned_signal_settings(records, reused, dataset.name, protocol)
            others = tuple(m for m in config.methods if m not in BASELINES)
            if others:
                records += run_evaluation(
                    EvaluateConfig(data=data, protocol=protocol, methods=others, seed=config.seed,
                                   model_params=method_params(protocol, tuned, config.finetune, config.fused)),
                    dataset=dataset, split=split, progress=progress)
            for record in records_to_json(records)["records"]:
                record["n_items"] = dataset.n_items
                out["records"].append(record)
            out["seconds"] = round(time.perf_counter() - started, 1)
            carried = _not_measured(reused, out["records"])
            datasets = [r["dataset"] for r in reused] + [d.name for _, d, _ in work]
            merged = dict(out, records=_in_table_order(out["records"] + carried, datasets))
            merged["bars"] = bar_checks(merged["records"])
            write_results(merged, config.out_dir, config.name)  # partial results survive a long run
    return merged


def _in_table_order(records: list[dict], datasets: list[str] = ()) -> list[dict]:
    """Measured and carried-over records together, by data set (in the order of `datasets`: the carried-over
    files' first, then this run's), protocol and method as the suite runs them, so a run that re-measures
    one protocol writes its tables where they were."""
    datasets = list(dict.fromkeys([*datasets, *(r["dataset"] for r in records)]))

    def position(record: dict) -> tuple:
        protocol, method = record["protocol"], record["method"]
        return (datasets.index(record["dataset"]),
                PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS), protocol,
                ALL_METHODS.index(method) if method in ALL_METHODS else len(ALL_METHODS), method)

    return sorted(records, key=position)


def _reusable_records(config: QualityConfig) -> list[dict]:
    """Records of the `reuse` files, each marked with where it was measured; the first file to hold a
    (data set, protocol, method) wins, so a key is never carried over twice."""
    carried: dict[tuple, dict] = {}
    for path in config.reuse:
        previous = _read_quality_results(Path(path))
        source = {"file": str(path), "command": previous.get("command"),
                  "date": previous.get("machine", {}).get("date")}
        for record in previous["records"]:
            if record.get("seed", config.seed) != config.seed:  # another seed: other test sets
                raise ValueError(f"--reuse {path}: its {record['dataset']} {record['protocol']} {record['method']} "
                                 f"record has seed {record['seed']}, this run seed {config.seed}")
            key = (record["dataset"], record["protocol"], record["method"])
            if key not in carried:
                carried[key] = record if record.get("reused_from") else {**record, "reused_from": source}
    return list(carried.values())


def _read_quality_results(path: Path) -> dict:
    """A results file of this suite, or a ValueError naming the file and what is wrong with it."""
    try:
        previous = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"--reuse {path}: cannot read it ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--reuse {path}: not JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(previous, dict) or previous.get("suite") != "quality":
        raise ValueError(f"--reuse {path}: not a results file of the quality suite (an `lmrec evaluate --json` file "
                         "lacks what the bars need; run `lmrec bench quality` instead)")
    records = previous.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"dataset", "protocol", "method", "metrics",
                                                                         "n_items"} <= set(r) for r in records):
        raise ValueError(f"--reuse {path}: its records lack dataset, protocol, method, metrics or n_items")
    return previous


def _not_measured(reused: list[dict], measured: list[dict]) -> list[dict]:
    """The reused records whose (data set, protocol, method) this run has not measured (yet)."""
    done = {(r["dataset"], r["protocol"], r["method"]) for r in measured}
    return [r for r in reused if (r["dataset"], r["protocol"], r["method"]) not in done]


def bar_checks(records: list[dict]) -> list[dict]:
    """The quality bars of the issue, computed from the records (only those the run has data for).

    Each bar lists the records it read (`inputs`); `uses_reused` says whether one of them was carried
    over from an earlier run rather than measured in this one.
    """
    by = {(r["dataset"], r["protocol"], r["method"]): r for r in records}
    checks = []

    def ndcg(dataset, protocol, method):
        record = by.get((dataset, protocol, method))
        return None if record is None else record["metrics"]["ndcg@10"]

    def add(bar: str, value, needed: float, inputs: list[tuple], **extra) -> None:
        checks.append({"bar": bar, "value": value, "needed": needed, **extra,
                       "inputs": [list(key) for key in inputs],
                       "uses_reused": any(by[key].get("reused_from") for key in inputs)})

    def interval(numerator: tuple, denominator: tuple) -> dict:
        """The ratio's paired bootstrap interval, when both records kept per-user NDCG@10 of one test set:
        the same test-set fingerprint, or (records written before fingerprints were kept) the same seed,
        catalogue and number of test users."""
        a, b = by[numerator], by[denominator]
        values = [r.get("per_user", {}).get(PER_USER_METRIC) for r in (a, b)]
        if not all(values) or len(values[0]) != len(values[1]):
            return {}
        if a.get("test_set") and b.get("test_set"):
            paired = a["test_set"] == b["test_set"]
        else:
            paired = all(a.get(key) == b.get(key) for key in ("seed", "n_items", "n_test_users"))
        if not paired:
            return {}
        bounds = paired_bootstrap_ratio(np.asarray(values[0]), np.asarray(values[1]), level=INTERVAL_LEVEL,
                                        resamples=BOOTSTRAP_RESAMPLES)
        return {} if bounds is None else {"interval": [round(bounds[0], 4), round(bounds[1], 4)]}

    for dataset in sorted({r["dataset"] for r in records}):
        for protocol, needed in (("temporal-loo", 1.10), ("random-811", 1.0)):
            fused = ndcg(dataset, protocol, "fused")
            base = [(ndcg(dataset, protocol, m), m) for m in BASELINES if ndcg(dataset, protocol, m) is not None]
            if fused is not None and base:
                best, best_method = max(base)
                add(f"fused ndcg@10 vs best baseline ({best_method}), {dataset} {protocol}",
                    fused / best if best else float("inf"), needed,
                    [(dataset, protocol, "fused")] + [(dataset, protocol, m) for _, m in base],
                    **interval((dataset, protocol, "fused"), (dataset, protocol, best_method)))
        pre, fine = ndcg(dataset, "temporal-loo", "lm-pretrained"), ndcg(dataset, "temporal-loo", "lm-finetuned")
        if pre and fine is not None:
            # The issue sets this bar on ml-100k; elsewhere the ratio is reported, not judged.
            add(f"lm-finetuned vs lm-pretrained ndcg@10, {dataset} temporal-loo", fine / pre, 1.5,
                [(dataset, "temporal-loo", "lm-pretrained"), (dataset, "temporal-loo", "lm-finetuned")],
                **interval((dataset, "temporal-loo", "lm-finetuned"), (dataset, "temporal-loo", "lm-pretrained")),
                **({} if dataset in ("ml-100k", "synthetic") else {"met": None, "note": "bar set for ml-100k only"}))
        cold = by.get((dataset, "cold-items", "fused"))
        if cold and cold.get("cold_metrics"):
            hit = cold["cold_metrics"]["cold_hit@10"]
            # Random: the expected hit@10 of a random order of each user's unseen items, over their cold
            # targets (records before it was kept: the 10 / items, which ignores that users have
            # several targets and that seen items are never ranked, and so flatters the ratio).
            exact = cold["cold_metrics"].get("cold_random_hit@10")
            random_hit, how = (exact, "random order of the unseen items") if exact else (10 / cold["n_items"], "10 / items")
            add(f"fused cold-target hit@10 vs random ({how}: {random_hit:.4f}), {dataset}", hit / random_hit, 10.0,
                [(dataset, "cold-items", "fused")])
            # No bar: the reference that knows only which items nobody has touched yet. The split makes the
            # cold items nearly all of those, so this is what the text, graph and tags add beyond "it is new".
            new_only = cold["cold_metrics"].get("cold_no_interactions_random_hit@10")
            if new_only:
                add(f"fused cold-target hit@10 vs a random order of the items without interactions "
                    f"({new_only:.4f}), {dataset}", hit / new_only, None, [(dataset, "cold-items", "fused")],
                    met=None, note="a reference, no bar")
            cf_methods = [m for m in BASELINES if (dataset, "cold-items", m) in by
                          and by[(dataset, "cold-items", m)].get("cold_metrics")]
            if cf_methods:
                best_cf = max(by[(dataset, "cold-items", m)]["cold_metrics"].get("cold_hit@10", 0.0) for m in cf_methods)
                # CF alone cannot score an item it never saw: best_cf is usually exactly 0. Record the two
                # hit rates; the ratio is then unbounded (None in JSON), met whenever fused finds any.
                ratio = hit / best_cf if best_cf else None
                add(f"fused cold-target hit@10 ({hit:.4f}) vs best CF-only ({best_cf:.4f}), {dataset}", ratio, 2.0,
                    [(dataset, "cold-items", "fused")] + [(dataset, "cold-items", m) for m in cf_methods],
                    **({"met": hit > 0} if ratio is None else {}))
        for protocol in PROTOCOLS:
            fp32, int8 = ndcg(dataset, protocol, "fused"), ndcg(dataset, protocol, "fused-int8")
            if fp32 and int8 is not None:
                add(f"fused-int8 vs fused ndcg@10, {dataset} {protocol}", int8 / fp32, 0.99,
                    [(dataset, protocol, "fused"), (dataset, protocol, "fused-int8")],
                    **interval((dataset, protocol, "fused-int8"), (dataset, protocol, "fused")))
    for check in checks:
        if check["value"] is not None and "note" not in check:
            check["met"] = bool(check["value"] >= check["needed"])
    return checks


def write_results(payload: dict, out_dir: Path, name: str) -> list[Path]:
    payload = dict(payload, bars=payload.get("bars") or bar_checks(payload["records"]))
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=lambda png: bar_chart(payload["records"], png, metric="ndcg@10"))


# Superscript letters that tell carried-over sources apart when a report's rows come from several runs.
# There are 25: Unicode has no superscript q.
_SOURCE_LETTERS = "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻ"


def _source_of(record: dict) -> tuple[str, str, str] | None:
    reused = record.get("reused_from")
    return None if not reused else (reused["file"], reused.get("command") or "", reused.get("date") or "")


def source_markers(records: list[dict]) -> dict[tuple[str, str, str], str]:
    """Each carried-over source's footnote marker, oldest first (undated sources first): ¹ when there is one
    source, ¹ᵃ, ¹ᵇ, ... when rows come from several runs, so a reader can tell which run measured which row."""
    sources = sorted({s for s in map(_source_of, records) if s}, key=lambda s: (s[2], s[0], s[1]))
    if len(sources) == 1:
        return {sources[0]: "¹"}
    return {source: "¹" + (_SOURCE_LETTERS[i] if i < len(_SOURCE_LETTERS) else f"({i + 1})")
            for i, source in enumerate(sources)}


def _bar_markers(bar: dict, by_key: dict[tuple, dict], markers: dict) -> str:
    """The markers of the carried-over sources a bar read; every marker for a bar from a file written before
    bars listed their `inputs` (it may have read any of them)."""
    if not bar.get("uses_reused"):
        return ""
    found = {markers[source] for key in bar.get("inputs") or []
             if (source := _source_of(by_key.get(tuple(key), {})))}
    order = list(markers.values())
    return " " + ",".join(sorted(found, key=order.index) if found else order or ["¹"])


def render_markdown(payload: dict) -> str:
    markers = source_markers(payload["records"])
    by_key = {(r["dataset"], r["protocol"], r["method"]): r for r in payload["records"]}
    lines = ["# Quality suite", "",
             f"Command: `{payload.get('command') or 'lmrec bench quality'}`  ",
             f"Machine: {payload['machine']['cpu_model']}, {payload['machine']['cores']} cores; "
             f"seed {payload['config']['seed']}; full ranking, seen items excluded; tuned on validation only.", ""]
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in payload["records"]:
        groups.setdefault((record["dataset"], record["protocol"]), []).append(record)
    for (dataset, protocol), records in groups.items():
        lines += [f"## {dataset} · {protocol} ({records[0]['n_test_users']} test users, {records[0]['n_items']} items)", ""]
        columns = ["ndcg@10", "recall@10", "hit@10", "mrr@10", "ndcg@20", "recall@20", "coverage@10"]
        cold = any(r.get("cold_metrics") for r in records)
        if cold:
            columns.append("cold_hit@10")
        rows = []
        for r in records:
            values = {**r["metrics"], **r.get("cold_metrics", {})}
            marker = f" {markers[_source_of(r)]}" if r.get("reused_from") else ""
            rows.append([r["method"] + marker] + [f"{values[c]:.4f}" if c in values else "–" for c in columns]
                        + [f"{r['seconds']:.0f}"])
        lines += markdown_table(["method"] + columns + ["seconds"], rows) + [""]
    if payload.get("bars"):
        lines += ["## Bars", ""]
        lines += markdown_table(["bar", "measured", f"{INTERVAL_LEVEL:.0%} interval ²", "needed", "met"],
                                [[b["bar"] + _bar_markers(b, by_key, markers),
                                  "unbounded" if b["value"] is None else f"{b['value']:.3f}",
                                  "{:.3f}–{:.3f}".format(*b["interval"]) if b.get("interval") else "–",
                                  "–" if b["needed"] is None else f"{b['needed']:.2f}",
                                  b["note"] if b.get("note") else "yes" if b["met"] else "NO"]
                                 for b in payload["bars"]]) + [""]
    for (file, command, date), marker in markers.items():
        origin = ", ".join(filter(None, [f"measured by `{command}`" if command else "", date]))
        lines.append(f"{marker} Carried over from `{file}`{f' ({origin})' if origin else ''}, not re-measured in this "
                     f"run; a bar marked {marker} uses such a row.  ")
    if payload.get("bars"):
        lines.append(INTERVAL_NOTE)
    for note in payload.get("notes", []):
        lines.append(f"Note: {note}  ")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    from lmrec.cli import _add_data_arguments

    parser.add_argument("--datasets", help="MovieLens folders under --data-root (default: ml-100k,ml-latest-small)")
    parser.add_argument("--data-root", help="folder holding the MovieLens folders (default: ../shared/data)")
    # Your own data instead: the same options as `lmrec build` and `lmrec evaluate`.
    _add_data_arguments(parser, default_dataset=None,
                        dataset_help="run on your own data set instead of the MovieLens ones (with --data-dir; "
                                     "csv takes --csv KEY=VALUE options)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--method", action="append", help="methods (default: all)")
    parser.add_argument("--param", action="append", metavar="lm-finetuned.NAME=VALUE",
                        help="fine-tuning settings, e.g. lm-finetuned.steps=400; fused.NAME=VALUE sets a fused "
                             "(and fused-int8) setting, e.g. fused.candidates=25")
    parser.add_argument("--seed", type=seed_value, default=42)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="quality", help="result file stem")
    parser.add_argument("--smoke-users", type=non_negative_int, default=0, help="smoke run on a synthetic data set of N users")
    parser.add_argument("--reuse", action="append", help="a previous results JSON: records this run does not measure are carried over, marked")


def _existing_file(option: str, value: str) -> Path:
    from lmrec.cli import CliError

    if Path(value).is_dir():
        raise CliError(f"{option} {value}: a folder; expected a results file (e.g. benchmarks/results/quality.json)")
    if not Path(value).is_file():
        raise CliError(f"{option}: no such file {value!r}")
    return Path(value)


def config_from_args(args) -> QualityConfig:
    from lmrec.cli import CliError, _model_params

    from .cli_checks import check_results_file

    methods = tuple(m for chunk in (args.method or [",".join(ALL_METHODS)]) for m in chunk.split(",") if m)
    if not methods:
        raise CliError(f"--method {args.method[-1]!r} names no method (known: {', '.join(ALL_METHODS)})")
    if args.datasets is not None and not [name for name in args.datasets.split(",") if name]:
        raise CliError(f"--datasets {args.datasets!r} names no data set (e.g. ml-100k,ml-latest-small)")
    for method in methods:
        if method not in ALL_METHODS:
            raise CliError(f"--method: unknown method {method!r} (known: {', '.join(ALL_METHODS)})")
    protocols = tuple(args.protocols.split(","))
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise CliError(f"--protocols: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    params = _model_params(args.param, ("lm-finetuned", "fused"))
    _check_params(params, methods)
    finetune, fused = dict(params.get("lm-finetuned", {})), dict(params.get("fused", {}))
    check_results_file(args.out, args.name)
    return QualityConfig(datasets=tuple(name for name in (args.datasets or ",".join(QualityConfig.datasets)).split(",")
                                        if name),
                         data=_own_data(args), protocols=protocols, methods=methods,
                         seed=args.seed, finetune=finetune, fused=fused, out_dir=Path(args.out), name=args.name,
                         synthetic_users=args.smoke_users, reuse=tuple(_existing_file("--reuse", f) for f in args.reuse or ()),
                         **({"data_root": Path(args.data_root)} if args.data_root else {}))


# Which methods each `--param METHOD.NAME=VALUE` reaches: the fine-tuning settings also fine-tune the fused
# models' encoder, the fused settings set both fused methods.
PARAM_METHODS = {"lm-finetuned": ("lm-finetuned", *FUSED_METHODS), "fused": FUSED_METHODS}


def _check_params(params: dict[str, dict], methods: tuple[str, ...]) -> None:
    """Refuse, as `lmrec evaluate` does, a --param that no method of the run would read, and a setting the
    method does not have (or a value of the wrong kind), before any data is loaded."""
    from lmrec.cli import CliError
    from lmrec.export.models.base import check_settings

    for method, settings in params.items():
        if not any(m in methods for m in PARAM_METHODS[method]):
            raise CliError(f"--param {method}.{next(iter(settings))}: no method of this run reads {method} settings "
                           f"(they reach {', '.join(PARAM_METHODS[method])}; --method runs {', '.join(methods)})")
        try:
            check_settings(method, settings)
        except ValueError as error:
            raise CliError(f"--param: {error}") from None


def _own_data(args):
    """The DataConfig of `--dataset/--data-dir/--csv ...`, or None for the MovieLens folders."""
    from lmrec.cli import CliError, _data_config

    own_options = [name for name, value in (("--data-dir", args.data_dir), ("--csv", args.csv),
                                            ("--min-user-interactions", args.min_user_interactions),
                                            ("--min-item-interactions", args.min_item_interactions),
                                            ("--implicit-threshold", args.implicit_threshold)) if value]
    if args.dataset is None:
        if own_options:  # they only describe your own data set; MovieLens runs would silently ignore them
            raise CliError(f"{own_options[0]} needs --dataset (csv, movielens-csv, ml-100k or ml-latest-small) "
                           "to say how to read your data")
        return None
    if args.dataset == "synthetic":
        raise CliError("--dataset synthetic: for a synthetic run use --smoke-users N")
    if args.datasets or args.data_root or args.smoke_users:
        given = "--datasets" if args.datasets else "--data-root" if args.data_root else "--smoke-users"
        raise CliError(f"--dataset {args.dataset} runs on your own data; {given} selects other data sets: give one or the other")
    return _data_config(args)

