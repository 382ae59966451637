"""Choose a fused-model setting on validation only: fit on train, score the validation interactions.

    .venv/bin/python -m lmrec.benchmarks.fused_validation --data-dir ../shared/data/ml-100k \
        '{"candidates": 50}' '{"candidates": 100}' \
        --rankers '{}' '{"prior": false}' '{"early_stopping_folds": 0, "epochs": 30}'

Each positional argument is a JSON object of FusedRecommender settings; each `--rankers` object is a
RankerConfig override tried on that fit (only the ranker is retrained: the signals, the fine-tuned
encoder and the candidate features are computed once per setting). The printout is valid ndcg@10
per (setting, ranker), next to the best baseline's valid ndcg@10 when `--baseline` names one. On
`cold-items` it also prints the hit@10 of the validation cases whose target is a cold item, beside two
random references (see `describe_validation`). The test interactions are never read.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from lmrec.cli import DATASETS
from lmrec.cli_client import CliError
from lmrec.cli_types import positive_int
from lmrec.export.cleaning import DataError
from lmrec.export.evaluate import _cold_target_metrics, _rank_and_measure, _ranking_task
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.models.base import MODELS, check_settings, make_model
from lmrec.export.models.fused import settings_for_protocol
from lmrec.export.ranker import RankerConfig
from lmrec.export.splits import PROTOCOLS, split_dataset

from .cli_checks import parser_errors


def _memoised_features(model):
    """Score-time candidate features depend on (users, histories) only, not on the ranker: compute once."""
    compute, memo = model.features, {}

    def features(users, histories, profile=None, excluded=None):
        key = (tuple(int(u) for u in users), tuple(hash(np.asarray(h).tobytes()) for h in histories))
        if profile is not None or excluded is not None:
            return compute(users, histories, profile, excluded)
        if key not in memo:
            memo[key] = compute(users, histories)
        return memo[key]

    model.features = features


def describe_validation(model, dataset, valid, split) -> str:
    """Valid NDCG@10 and recall@10, and on cold-items the cold-target hit@10 with its references.

    Validation is where a cold-items set-up can be judged fairly: the test's cold items have no
    interactions in train either, so about half the items without train interactions are never valid
    targets (102 of 205 are on ml-100k), and "this item is new" alone gets only the `new-items random`
    reference. On test, after the refit on train + valid, nearly every such item is a target."""
    metrics, top = _rank_and_measure(model, dataset, valid, (10,), return_top=True)
    line = f"valid ndcg@10 {metrics['ndcg@10']:.4f} recall@10 {metrics['recall@10']:.4f}"
    cold, n_cold = _cold_target_metrics(top, valid, split.cold_items, dataset.n_items, (10,), known=split.train)
    if n_cold:
        line += (f" cold hit@10 {cold['cold_hit@10']:.4f} (random {cold['cold_random_hit@10']:.4f}, "
                 f"new-items random {cold['cold_no_interactions_random_hit@10']:.4f}, {n_cold} users)")
    return line


def json_object(what: str, text: str) -> dict:
    """`text` read as a JSON object of settings, or a CliError naming `what` and the text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{what} {text!r}: not JSON ({error}); expected an object such as "
                       "'{\"candidates\": 50}'") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} {text!r}: expected a JSON object of settings (e.g. '{{}}'), got {type(value).__name__}")
    return value


def model_settings(method: str, what: str, text: str, **fixed) -> dict:
    """The settings `text` gives `method`, checked (names, kinds, and the model's own checks of its values) as
    far as can be done without data: a bad one stops the run before any fit, not after the first."""
    params = json_object(what, text)
    if method not in MODELS:
        raise CliError(f"{what}: unknown method {method!r} (known: {', '.join(sorted(MODELS))})")
    try:
        check_settings(method, params)
        make_model(method, **fixed, **params)
    except (TypeError, ValueError) as error:
        raise CliError(f"{what} {text}: {error}") from None
    return params


def ranker_settings(text: str) -> dict:
    """A --rankers object: RankerConfig overrides, each a field RankerConfig has."""
    params = json_object("--rankers", text)
    known = {f.name for f in fields(RankerConfig)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise CliError(f"--rankers {text}: RankerConfig has no setting {unknown[0]!r} (its settings: "
                       f"{', '.join(sorted(known))})")
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=tuple(d for d in DATASETS if d != "synthetic"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--protocol", default="temporal-loo", choices=PROTOCOLS)
    parser.add_argument("--steps", type=positive_int, default=300, help="fine-tuning steps of the encoder")
    parser.add_argument("--rankers", nargs="*", default=["{}"], help="JSON objects of RankerConfig overrides")
    parser.add_argument("--baseline", nargs=2, metavar=("METHOD", "PARAMS"),
                        help="a baseline and its JSON settings, measured on the same validation split")
    parser.add_argument("settings", nargs="*", help="JSON objects of FusedRecommender settings")
    args = parser.parse_args(argv)
    if not args.settings:  # argparse's own message ("settings are required") hides the usual cause
        parser.error("give at least one JSON object of FusedRecommender settings (e.g. '{}'); with --rankers, "
                     "put them before it: --rankers takes every argument after it")
    protocol_settings = settings_for_protocol(args.protocol)
    # Every setting, ranker and the baseline checked before the data is read and the first (long) fit.
    with parser_errors(parser):
        if not Path(args.data_dir).is_dir():
            raise CliError(f"--data-dir {args.data_dir} is not a directory")
        settings = [{**protocol_settings,  # as the quality suite sets them, unless given
                     **model_settings("fused", "setting", setting, seed=42, lm_params={"steps": args.steps})}
                    for setting in args.settings]
        rankers = [ranker_settings(ranker) for ranker in args.rankers]
        baseline_params = model_settings(args.baseline[0], f"--baseline {args.baseline[0]}", args.baseline[1],
                                         seed=42) if args.baseline else None
    with parser_errors(parser, DataError):
        dataset = load_dataset(DataConfig(dataset=args.dataset, data_dir=Path(args.data_dir))).dataset
    split = split_dataset(dataset, args.protocol, seed=42)
    valid = _ranking_task(split.train, split.valid, dataset.n_users)
    if args.baseline:
        baseline = make_model(args.baseline[0], seed=42, **baseline_params).fit(dataset, split.train)
        print(f"baseline {args.baseline[0]} {args.baseline[1]}: {describe_validation(baseline, dataset, valid, split)}",
              flush=True)
    for params in settings:
        started = time.perf_counter()
        model = make_model("fused", seed=42, lm_params={"steps": args.steps}, **params).fit(dataset, split.train)
        _memoised_features(model)
        print(f"{json.dumps(params)}: fitted in {time.perf_counter() - started:.0f}s", flush=True)
        base_ranker = model.ranker_config
        for ranker, overrides in zip(args.rankers, rankers):
            started = time.perf_counter()
            trained = model.retrain_ranker(replace(base_ranker, **overrides))
            print(f"  ranker {ranker}: {describe_validation(model, dataset, valid, split)} ({trained.epochs} epochs, "
                  f"prior {trained.prior}, {time.perf_counter() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
