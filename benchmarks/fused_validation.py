"""Choose a fused-model setting on validation only: fit on train, score the validation interactions.

    .venv/bin/python -m lmrec.benchmarks.fused_validation --data-dir ../shared/data/ml-100k \
        '{"candidates": 50}' '{"candidates": 100}' '{"candidates": 150}'

Each argument is a JSON object of FusedRecommender settings; the printout is valid ndcg@10 per setting.
The test interactions are never read. (This is how the default `candidates=100` was chosen.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lmrec.export.evaluate import _rank_and_measure, _ranking_task
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.models.base import make_model
from lmrec.export.splits import split_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--protocol", default="temporal-loo")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of the encoder")
    parser.add_argument("settings", nargs="+", help="JSON objects of FusedRecommender settings")
    args = parser.parse_args(argv)
    dataset = load_dataset(DataConfig(dataset=args.dataset, data_dir=Path(args.data_dir))).dataset
    split = split_dataset(dataset, args.protocol, seed=42)
    valid = _ranking_task(split.train, split.valid, dataset.n_users)
    holdout = "last" if args.protocol == "temporal-loo" else "random"
    for setting in args.settings:
        params = json.loads(setting)
        started = time.perf_counter()
        model = make_model("fused", seed=42, holdout=holdout, lm_params={"steps": args.steps}, **params)
        metrics = _rank_and_measure(model.fit(dataset, split.train), dataset, valid, (10,))
        print(f"{json.dumps(params)}: valid ndcg@10 {metrics['ndcg@10']:.4f} recall@10 {metrics['recall@10']:.4f} "
              f"({time.perf_counter() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
