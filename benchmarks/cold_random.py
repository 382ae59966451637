"""The cold-target bar's random baseline, for quality records written before the suite kept it.

    .venv/bin/python -m lmrec.benchmarks.cold_random benchmarks/results/quality-ml-100k.json [--write]

For each `cold-items` record with cold-target metrics, it splits the record's MovieLens data set again
(same protocol and seed, from ../shared/data/<dataset>), checks that the test set is the record's own
(its `test_set` fingerprint), and prints the expected hit@10 of a random order of each cold-target user's
unseen items (`random_hit_rate`) beside the issue's 10 / items, and of a random order of the items nobody
has interacted with (which the split makes nearly all cold: what knowing only "this item is new" gets). `--write` stores it in the records as
`cold_metrics["cold_random_hit@10"]`, as the suite now does itself, and re-renders the file's report (its
bars are computed again from the records; no model is run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmrec.export.cleaning import DataError
from lmrec.export.dataset import concat
from lmrec.export.evaluate import (_ranking_task, cold_random_references, cold_target_rows,
                                   fingerprint_of_test_set)
from lmrec.export.loaders import DataConfig, load_dataset
from lmrec.export.splits import split_dataset

from .cli_checks import parser_errors
from .quality import QualityConfig, write_results

MOVIELENS = ("ml-100k", "ml-latest-small")


def cold_random_hit(dataset_name: str, data_dir: Path, seed: int, k: int = 10) -> tuple[float, float, int, str]:
    """(expected random hit@k over the cold-target test users: among their unseen items, and among the items
    nobody has interacted with; their number; the test set's fingerprint)."""
    dataset = load_dataset(DataConfig(dataset=dataset_name, data_dir=data_dir)).dataset
    split = split_dataset(dataset, "cold-items", seed=seed)
    known = concat(split.train, split.valid)
    task = _ranking_task(known, split.test, dataset.n_users)  # as the suite scores test
    rows, targets = cold_target_rows(task, split.cold_items)
    chance = cold_random_references(task, rows, targets, dataset.n_items, (k,), known)
    return (chance[f"random_hit@{k}"], chance[f"no_interactions_random_hit@{k}"], len(rows),
            fingerprint_of_test_set(task))


def read_quality_results(path: Path) -> dict:
    """A quality suite results file, refused by name (ValueError) when it cannot be read or is another kind
    of file: not JSON, another suite's results, records without what this script reads."""
    try:
        payload = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not a JSON results file ({error})") from None
    records = payload.get("records") if isinstance(payload, dict) else None
    suite = payload.get("suite") if isinstance(payload, dict) else None
    if suite not in (None, "quality"):
        raise ValueError(f"{path}: the {suite} suite's results, not the quality suite's "
                         "(expected e.g. benchmarks/results/quality.json)")
    if not isinstance(records, list):
        raise ValueError(f"{path}: not a quality suite results file (no list of records; expected e.g. "
                         "benchmarks/results/quality.json)")
    needed = ("dataset", "protocol", "method", "seed")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or any(key not in record for key in needed):
            raise ValueError(f"{path}: record {number} is not a quality suite record (it needs "
                             f"{', '.join(needed)}); expected e.g. benchmarks/results/quality.json")
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a quality suite JSON file")
    parser.add_argument("--data-root", type=Path, default=QualityConfig.data_root)
    parser.add_argument("--write", action="store_true", help="store it in the records and re-render the report")
    args = parser.parse_args(argv)
    with parser_errors(parser, ValueError):
        payload = read_quality_results(args.results)
    computed: dict[tuple[str, int], tuple[float, float, int, str]] = {}
    changed = False
    for record in payload["records"]:
        if record["protocol"] != "cold-items" or not record.get("cold_metrics"):
            continue
        if record["dataset"] not in MOVIELENS:
            print(f"{record['dataset']}: not a MovieLens data set read with default options; skipped")
            continue
        key = (record["dataset"], record["seed"])
        if key not in computed:
            try:
                computed[key] = cold_random_hit(record["dataset"], args.data_root / record["dataset"], record["seed"])
            except DataError as error:  # no such --data-root, or not the data set there
                # The loader's own hint names --data-dir, an option this command does not have; a bad file
                # in the right folder has no hint and needs none.
                hint = f" (pass --data-root pointing at the folder that holds {record['dataset']}/)" if error.hint else ""
                parser.error(f"--data-root {args.data_root}: {error.problem}{hint}")
        chance, new_only, users, fingerprint = computed[key]
        if record.get("test_set") not in (None, fingerprint) or users != record.get("n_cold_test_users", users):
            raise SystemExit(f"{record['dataset']} {record['method']}: the split made again is not the record's "
                             f"test set ({users} cold-target users against {record.get('n_cold_test_users')})")
        if record["method"] == "fused":
            hit, formula = record["cold_metrics"]["cold_hit@10"], 10 / record["n_items"]
            print(f"{record['dataset']}: fused cold hit@10 {hit:.4f} over {users} users; random order of the "
                  f"unseen items {chance:.4f} → {hit / chance:.1f}x; the issue's 10 / items {formula:.4f} → "
                  f"{hit / formula:.0f}x; random order of the items without interactions {new_only:.4f} → "
                  f"{hit / new_only:.2f}x")
        wanted = {"cold_random_hit@10": chance, "cold_no_interactions_random_hit@10": new_only}
        if args.write and any(record["cold_metrics"].get(name) != value for name, value in wanted.items()):
            record["cold_metrics"].update(wanted)
            changed = True
    if args.write and changed:
        payload["bars"] = None  # computed again from the records
        note = ("cold_random_hit@10 and cold_no_interactions_random_hit@10 added to the cold-items records "
                "afterwards by `python -m lmrec.benchmarks.cold_random --write` (the same split, checked by its "
                "fingerprint; no model run)")
        payload["notes"] = [n for n in payload.get("notes", []) if "lmrec.benchmarks.cold_random" not in n] + [note]
        for path in write_results(payload, args.results.parent, args.results.stem):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
