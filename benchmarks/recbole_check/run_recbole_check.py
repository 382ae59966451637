"""Cross-check lmrec's evaluation harness against RecBole (an independent implementation).

Run with the RecBole venv's python (see README.md beside this file):

    /tmp/recbole-venv/bin/python benchmarks/recbole_check/run_recbole_check.py [--protocols temporal-loo,random-811]

For each protocol it
  (a) exports lmrec's exact split to RecBole atomic files under a temp dir (export_split.py, run with
      lmrec's venv: the two environments stay separate; MovieLens data never enters the repository),
  (b) runs RecBole Pop and EASE on those files (benchmark_filename: RecBole does not re-split;
      train = lmrec train ∪ valid, test = lmrec test, full ranking, train ∪ valid items masked),
  (c) runs `lmrec evaluate` (a subprocess of lmrec's venv) for pop and ease,
  (d) writes benchmarks/results/recbole_check.json and recbole_check.md.
EASE uses the l2 that lmrec chose on validation (from its JSON), so neither side tunes.
Everything runs single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LMREC_VENV = REPO / ".venv" / "bin"
RESULTS = REPO / "benchmarks" / "results"
METRICS = ("ndcg@10", "recall@10", "hit@10", "mrr@10")
TOKEN = "ml100k"


def run_lmrec(protocol: str, data_dir: str, workdir: Path) -> tuple[dict, str, str]:
    out = workdir / f"lmrec_{protocol}.json"
    cmd = [str(LMREC_VENV / "lmrec"), "evaluate", "--dataset", "ml-100k", "--data-dir", data_dir,
           "--protocol", protocol, "--method", "pop,ease", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    records = {r["method"]: r for r in json.loads(out.read_text())["records"]}
    cmd[-1] = f"<tmp>/{out.name}"  # the temp dir changes every run: keep the recorded command stable
    return records, shlex.join(cmd), proc.stdout


def export_split(protocol: str, data_dir: str, workdir: Path) -> dict:
    cmd = [str(LMREC_VENV / "python"), str(HERE / "export_split.py"), "--data-dir", data_dir,
           "--protocol", protocol, "--out", str(workdir / "atomic"), "--token", TOKEN]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["folder"] = "<tmp>/atomic/" + TOKEN
    return summary


def recbole_config(model: str, workdir: Path, extra: dict):
    from recbole.config import Config

    config_dict = {
        "data_path": str(workdir / "atomic"),
        "checkpoint_dir": str(workdir / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # no filtering of any kind: every row of the files is an interaction
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "val_interval": None, "rm_dup_inter": None, "filter_inter_by_user_or_item": False,
        "eval_args": {"mode": "full", "order": "TO", "group_by": "user", "split": {"LS": "valid_and_test"}},
        "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "train_neg_sample_args": None,  # Pop counts items of training rows: no sampled negatives among them
        "epochs": 1, "eval_step": 0, "use_gpu": False, "device": "cpu", "seed": 42, "reproducibility": True,
        "show_progress": False, "save_dataset": False, "save_dataloaders": False, "log_wandb": False,
        "eval_batch_size": 1683 * 128, "worker": 0,
        "metric_decimal_place": 10,  # RecBole rounds results to 4 places by default
        **extra,
    }
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole would read --key=value arguments as config
    try:
        return Config(model=model, dataset=TOKEN, config_dict=config_dict)
    finally:
        sys.argv = argv


def run_recbole(model: str, workdir: Path, extra: dict, expect: dict, check_mask: bool) -> dict:
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = recbole_config(model, workdir, extra)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    # RecBole must see exactly the exported rows, users and items (ids include the padding id 0).
    assert dataset.file_size_list == [expect["files"][p] for p in ("train", "valid", "test")], dataset.file_size_list
    assert dataset.user_num - 1 == expect["n_users"] and dataset.item_num - 1 == expect["n_items"], (
        dataset.user_num, dataset.item_num)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if check_mask:
        check_test_mask(train_data, test_data)
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    started = time.perf_counter()
    trainer.fit(train_data, valid_data=None, saved=False, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    out = {"metrics": {k: float(v) for k, v in result.items()}, "seconds": round(time.perf_counter() - started, 2),
           "n_test_users": int(len(test_data.uid_list)), "config": {k: extra[k] for k in sorted(extra)}}
    if model == "Pop":
        out["pop_counts"] = net.item_cnt.squeeze(-1).numpy().copy()
        out["id2item"] = dataset.field2id_token["item_id"]
        out["train_item_ids"] = train_data._dataset.inter_feat["item_id"].numpy()
    return out


def check_test_mask(train_data, test_data) -> None:
    """The history RecBole masks for each test user is their whole train file (= lmrec train ∪ valid)."""
    train = train_data._dataset.inter_feat
    by_user: dict[int, set[int]] = {}
    for u, i in zip(train["user_id"].numpy().tolist(), train["item_id"].numpy().tolist()):
        by_user.setdefault(u, set()).add(i)
    for u in test_data.uid_list.tolist():
        masked = set(test_data.uid2history_item[u].tolist())
        assert masked == by_user.get(u, set()), f"user {u}: RecBole masks {len(masked)} items, train∪valid has {len(by_user.get(u, ()))}"


def _read_inter(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")[:2]) for line in path.read_text().splitlines()[1:]]


def _metrics_at_10(ranked: np.ndarray, targets: set[int]) -> dict[str, float]:
    hits = np.array([i in targets for i in ranked[:10]], dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, 12))
    first = int(np.argmax(hits)) + 1 if hits.any() else 0
    return {"ndcg@10": float(hits @ discounts / discounts[: min(len(targets), 10)].sum()),
            "recall@10": float(hits.sum() / len(targets)), "hit@10": float(hits.any()),
            "mrr@10": 1.0 / first if first else 0.0}


def pop_tie_diagnostic(pop: dict, workdir: Path) -> dict:
    """Pop recomputed in numpy from the exported files and RecBole's own counts, with two tie-breaks:
    lmrec's (lower lmrec item index first) and RecBole's internal id order (lower RecBole id first).
    If these reproduce each side's figures, any Pop difference is tie order alone."""
    id2item = list(pop["id2item"])
    tok = {t: i for i, t in enumerate(id2item)}
    counts = pop["pop_counts"].astype(np.float64)
    interaction_counts = np.bincount(pop["train_item_ids"], minlength=len(id2item))
    folder = workdir / "atomic" / TOKEN
    hist: dict[str, set[int]] = {}
    for u, i in _read_inter(folder / f"{TOKEN}.train.inter"):
        hist.setdefault(u, set()).add(tok[i])
    targets: dict[str, set[int]] = {}
    for u, i in _read_inter(folder / f"{TOKEN}.test.inter"):
        targets.setdefault(u, set()).add(tok[i])
    lmrec_order = (workdir / "atomic" / "lmrec_item_order.txt").read_text().split()
    lmrec_rank = np.full(len(id2item), len(id2item), dtype=np.int64)  # padding id 0 last
    for position, item in enumerate(lmrec_order):
        lmrec_rank[tok[item]] = position
    orders = {  # best first: count descending, then the tie key ascending
        "lmrec_tie_order": np.lexsort((lmrec_rank, -counts)),
        "recbole_id_order": np.lexsort((np.arange(len(id2item)), -counts)),
    }
    sums = {name: dict.fromkeys(METRICS, 0.0) for name in orders}
    tied_in_top = 0
    for u, target in targets.items():
        seen = hist.get(u, set()) | {0}
        for name, order in orders.items():
            ranked = np.array([i for i in order[: 12 + len(seen)] if i not in seen][:11])
            for m, v in _metrics_at_10(ranked, target).items():
                sums[name][m] += v
        top_counts = counts[ranked]
        tied_in_top += len(np.unique(top_counts)) < 11  # some tie among the 10 shown or at the 10/11 boundary
    n = len(targets)
    return {"recbole_pop_counts_equal_interaction_counts": bool(np.array_equal(counts[1:], interaction_counts[1:])),
            "test_users_with_tied_counts_in_top_11": int(tied_in_top), "n_test_users": n,
            **{f"numpy_pop_{name}": {m: v / n for m, v in s.items()} for name, s in sums.items()}}


def ratios(lm: dict, rb: dict) -> dict:
    return {m: (lm[m] / rb[m] if rb[m] else None) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocols", default="temporal-loo,random-811")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--skip-pop-default-batch", action="store_true",
                        help="skip the extra RecBole Pop run with its default train_batch_size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import recbole

    report: dict = {
        "command": shlex.join([Path(sys.executable).as_posix(), *sys.argv]),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "dataset": "ml-100k", "protocols": {},
    }
    for protocol in args.protocols.split(","):
        with tempfile.TemporaryDirectory(prefix="recbole_check_") as tmp:
            workdir = Path(tmp)
            print(f"== {protocol}", flush=True)
            split = export_split(protocol, args.data_dir, workdir)
            lm, lm_cmd, lm_log = run_lmrec(protocol, args.data_dir, workdir)
            l2 = float(lm["ease"]["params"]["l2"])
            # train_batch_size=1: RecBole Pop adds 1 per *distinct* item per batch
            # (item_cnt[item] = item_cnt[item] + 1), so only batches of one row count every interaction.
            pop = run_recbole("Pop", workdir, {"train_batch_size": 1}, split, check_mask=True)
            ties = pop_tie_diagnostic(pop, workdir)
            ease = run_recbole("EASE", workdir, {"reg_weight": l2}, split, check_mask=False)
            entry = {
                "split": split,
                "lmrec_command": lm_cmd,
                "lmrec_log": lm_log.strip().splitlines()[0],
                "recbole_history_mask_is_train_union_valid": True,  # asserted in check_test_mask
                "pop_ties": ties,
                "methods": {},
            }
            for name, rb in (("pop", pop), ("ease", ease)):
                lm_m = {m: lm[name]["metrics"][m] for m in METRICS}
                rb_m = {m: rb["metrics"][m] for m in METRICS}
                r = ratios(lm_m, rb_m)
                entry["methods"][name] = {
                    "params": lm[name]["params"], "lmrec": lm_m, "recbole": rb_m, "ratio_lmrec_over_recbole": r,
                    "within_10pct": {m: (v is not None and abs(v - 1) <= 0.10) for m, v in r.items()},
                    "n_test_users": {"lmrec": lm[name]["n_test_users"], "recbole": rb["n_test_users"]},
                    "recbole_config": rb["config"],
                }
            if not args.skip_pop_default_batch:
                as_shipped = run_recbole("Pop", workdir, {}, split, check_mask=False)
                entry["recbole_pop_default_batch"] = {
                    "note": "RecBole Pop with its default train_batch_size (2048): counts distinct items per batch, "
                            "not interactions",
                    "metrics": {m: as_shipped["metrics"][m] for m in METRICS},
                }
            for side, key in (("lmrec", "numpy_pop_lmrec_tie_order"), ("recbole", "numpy_pop_recbole_id_order")):
                ties[f"{key}_reproduces_{side}"] = all(
                    abs(ties[key][m] - entry["methods"]["pop"][side][m]) < 1e-6 for m in METRICS)
            report["protocols"][protocol] = entry
            print(json.dumps({k: entry["methods"][k]["ratio_lmrec_over_recbole"] for k in entry["methods"]}), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recbole_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "recbole_check.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = ["# lmrec vs RecBole: ml-100k, same split", "",
             f"RecBole {v['recbole']}, torch {v['torch']}, numpy {v['numpy']}. Full ranking, train ∪ valid items "
             "masked, metrics @10 averaged over test users; EASE at lmrec's validation-chosen l2.",
             f"Command: `{report['command']}`", ""]
    for protocol, entry in report["protocols"].items():
        lines += [f"## {protocol} ({entry['methods']['pop']['n_test_users']['lmrec']} test users)", "",
                  "| method | metric | lmrec | RecBole | ratio | within 10% |", "|---|---|---|---|---|---|"]
        for name, m in entry["methods"].items():
            label = name + (f" (l2={m['params']['l2']:g})" if m["params"] else "")
            for metric in METRICS:
                r = m["ratio_lmrec_over_recbole"][metric]
                lines.append(f"| {label} | {metric} | {m['lmrec'][metric]:.4f} | {m['recbole'][metric]:.4f} | "
                             f"{r:.3f} | {'yes' if m['within_10pct'][metric] else 'NO'} |")
        t = entry["pop_ties"]
        a, b = t["numpy_pop_lmrec_tie_order"], t["numpy_pop_recbole_id_order"]
        lines += ["", f"Pop ties: {t['test_users_with_tied_counts_in_top_11']} of {t['n_test_users']} test users have "
                  "equal counts among their 11 best eligible items; lmrec breaks ties by lower lmrec item index, "
                  "RecBole by torch.topk over its own ids. The same counts (RecBole's, = interactions in train ∪ valid: "
                  f"{t['recbole_pop_counts_equal_interaction_counts']}) ranked in numpy with lmrec's tie order: "
                  + ", ".join(f"{k}={a[k]:.4f}" for k in METRICS)
                  + f" (reproduces lmrec: {t['numpy_pop_lmrec_tie_order_reproduces_lmrec']}); "
                  "with RecBole's item ids ascending: " + ", ".join(f"{k}={b[k]:.4f}" for k in METRICS)
                  + f" (reproduces RecBole: {t['numpy_pop_recbole_id_order_reproduces_recbole']})."]
        if "recbole_pop_default_batch" in entry:
            d = entry["recbole_pop_default_batch"]["metrics"]
            lines.append("RecBole Pop with its default train_batch_size=2048 (counts distinct items per batch): "
                         + ", ".join(f"{k}={d[k]:.4f}" for k in METRICS) + ".")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
