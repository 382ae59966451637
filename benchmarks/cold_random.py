"""The cold-target bar's random baseline for quality records written before the suite kept it.

    .venv/bin/python -m lmrec.benchmarks.cold_random benchmarks/results/quality-ml-100k.json

For each `cold-items` record of `fused` in the file, it splits the record's data set again (same protocol and
seed, from ../shared/data/<dataset>), takes the test users with a cold target, and prints the expected
hit@10 of a random order of each one's unseen items (`random_hit_rate`), beside the issue's 10 / items and
the two ratios. Newer records carry it as `cold_metrics["cold_random_hit@10"]`. No model is run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmrec.export.dataset import concat
from lmrec.export.evaluate import _ranking_task, random_hit_rate
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.splits import split_dataset


def cold_random_hit(dataset_name: str, data_dir: Path, seed: int, k: int = 10) -> tuple[float, int]:
    dataset = load_dataset(DataConfig(dataset=dataset_name, data_dir=data_dir)).dataset
    split = split_dataset(dataset, "cold-items", seed=seed)
    task = _ranking_task(concat(split.train, split.valid), split.test, dataset.n_users)  # as the suite scores test
    unseen, targets = [], []
    for history, user_targets in zip(task.histories, task.targets):
        cold = np.unique(user_targets[np.isin(user_targets, split.cold_items)])
        if len(cold):
            unseen.append(dataset.n_items - len(np.unique(history)))
            targets.append(len(cold))
    return float(random_hit_rate(np.array(unseen), np.array(targets), k).mean()), len(targets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a quality suite JSON file")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    for record in json.loads(args.results.read_text())["records"]:
        if record["protocol"] != "cold-items" or record["method"] != "fused" or not record.get("cold_metrics"):
            continue
        hit = record["cold_metrics"]["cold_hit@10"]
        chance, users = cold_random_hit(record["dataset"], args.data_root / record["dataset"], record["seed"])
        formula = 10 / record["n_items"]
        print(f"{record['dataset']}: fused cold hit@10 {hit:.4f} over {users} users "
              f"(record: {record.get('n_cold_test_users')}); random order of the unseen items {chance:.4f} → "
              f"{hit / chance:.1f}x; the issue's 10 / items {formula:.4f} → {hit / formula:.0f}x")


if __name__ == "__main__":
    main()
