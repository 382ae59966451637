"""Choose fine-tuning settings on validation only: fine-tune on train, score the validation interactions.

    .venv/bin/python -m lmrec.benchmarks.finetune_validation --data-dir ../shared/data/ml-100k \
        '{"max_length": 128}' '{"max_length": 256}'

Each positional argument is a JSON object of `lm-finetuned` settings (`FinetuneConfig`: steps, max_length,
frozen_layers, ...; steps default to 300, as in the quality suite). The printout is the zero-shot
encoder's valid ndcg@10, then each setting's, its ratio to zero-shot and its time. Fine-tunes are cached
like the quality suite's, so the chosen setting's fit on train is reused there. The test interactions are
never read. This chose `FinetuneConfig.max_length` (docs/quality.md, "Fine-tuning reads 256 tokens").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lmrec.cli import DATASETS
from lmrec.cli_client import CliError
from lmrec.export.cleaning import DataError
from lmrec.export.evaluate import _rank_and_measure, _ranking_task
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.models.base import make_model
from lmrec.export.splits import PROTOCOLS, split_dataset

from .cli_checks import parser_errors
from .fused_validation import model_settings

QUALITY_SUITE_STEPS = 300


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=tuple(d for d in DATASETS if d != "synthetic"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--protocol", default="temporal-loo", choices=PROTOCOLS)
    parser.add_argument("settings", nargs="+", help="JSON objects of lm-finetuned (FinetuneConfig) settings")
    args = parser.parse_args(argv)
    # Every setting checked before the data is read and the first (long) fine-tune.
    with parser_errors(parser):
        if not Path(args.data_dir).is_dir():
            raise CliError(f"--data-dir {args.data_dir} is not a directory")
        settings = [{"steps": QUALITY_SUITE_STEPS, **model_settings("lm-finetuned", "setting", setting, seed=42)}
                    for setting in args.settings]
    with parser_errors(parser, DataError):
        dataset = load_dataset(DataConfig(dataset=args.dataset, data_dir=Path(args.data_dir))).dataset
    split = split_dataset(dataset, args.protocol, seed=42)
    with parser_errors(parser):
        for text, params in zip(args.settings, settings):  # checks that need the data (steps >= 1, ...)
            try:
                make_model("lm-finetuned", seed=42, **params).check(dataset, split.train)
            except ValueError as error:
                raise CliError(f"setting {text}: {error}") from None
    valid = _ranking_task(split.train, split.valid, dataset.n_users)
    zero_shot = _rank_and_measure(make_model("lm-pretrained", seed=42).fit(dataset, split.train), dataset, valid,
                                  (10,))["ndcg@10"]
    print(f"lm-pretrained: valid ndcg@10={zero_shot:.4f}", flush=True)
    for params in settings:
        started = time.perf_counter()
        model = make_model("lm-finetuned", seed=42, **params).fit(dataset, split.train)
        score = _rank_and_measure(model, dataset, valid, (10,))["ndcg@10"]
        print(f"lm-finetuned {json.dumps(params)}: valid ndcg@10={score:.4f}, {score / zero_shot:.3f}x zero-shot "
              f"({time.perf_counter() - started:.0f}s with the fine-tune, cached or not)", flush=True)


if __name__ == "__main__":
    main()
