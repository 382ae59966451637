"""Write lmrec's split of a dataset as RecBole atomic files (run with lmrec's own venv).

    python export_split.py --data-dir DIR --protocol temporal-loo --out /tmp/dir [--seed 42]

Writes OUT/ml100k/ml100k.{train,valid,test}.inter for RecBole's `benchmark_filename` mechanism:
train = lmrec train ∪ valid (what lmrec refits on before scoring test), valid = lmrec valid (not used
for model selection: both sides run with the hyper-parameters lmrec chose), test = lmrec test.
Raw MovieLens ids are written as tokens, so RecBole does its own id remapping. Prints a JSON summary
(sizes and per-user item sets are checked against this on the RecBole side).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmrec.cli_types import seed_value
from lmrec.export.dataset import concat
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.splits import split_dataset

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def _write(path: Path, part, user_ids, item_ids) -> None:
    with path.open("w") as f:
        f.write(HEADER)
        for u, i, t in zip(part.user.tolist(), part.item.tolist(), part.timestamp.tolist()):
            f.write(f"{user_ids[u]}\t{item_ids[i]}\t{t}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--seed", type=seed_value, default=42)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--token", default="ml100k", help="RecBole dataset name (file prefix)")
    args = parser.parse_args()

    ds = load_dataset(DataConfig(dataset=args.dataset, data_dir=args.data_dir)).dataset
    sp = split_dataset(ds, args.protocol, seed=args.seed)
    folder = args.out / args.token
    folder.mkdir(parents=True, exist_ok=True)
    train_valid = concat(sp.train, sp.valid)
    parts = {"train": train_valid, "valid": sp.valid, "test": sp.test}
    for name, part in parts.items():
        _write(folder / f"{args.token}.{name}.inter", part, ds.user_ids, ds.item_ids)
    # lmrec's dense item order (its Pop tie-break: lower index first), for the tie diagnostic
    (args.out / "lmrec_item_order.txt").write_text("\n".join(ds.item_ids) + "\n")
    pairs = train_valid.user.astype(np.int64) * ds.n_items + train_valid.item
    print(json.dumps({
        "dataset": ds.name, "protocol": sp.protocol, "seed": sp.seed,
        "n_users": ds.n_users, "n_items": ds.n_items,
        "lmrec_train": len(sp.train), "lmrec_valid": len(sp.valid), "lmrec_test": len(sp.test),
        "files": {name: len(part) for name, part in parts.items()},
        "duplicate_train_valid_pairs": int(len(pairs) - len(np.unique(pairs))),
        "folder": str(folder),
    }))


if __name__ == "__main__":
    main()
