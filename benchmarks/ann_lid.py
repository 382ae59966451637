"""How hard each synthetic catalogue recipe is: local intrinsic dimension (LID) over catalogue size.

`python -m lmrec.benchmarks.ann_lid` → benchmarks/results/ann-lid.{json,md}. For every noise recipe
(kind, scale, rank) it builds the ANN suite's 1M catalogue once and measures the median LID around
held-out queries drawn by the same recipe, on the catalogue's nested 10k / 100k / 1M prefixes, beside
the real vectors' own LID. No index is built, so the whole grid takes a few minutes; it is how the ANN
suite's default recipe was chosen (the one whose 1M LID is nearest the real item texts').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmrec.cli import command_line
from lmrec.cli_types import positive_int

from . import ann
from .cli_checks import check_results_file, parser_errors
from .machine import machine_facts
from .report import markdown_table, write_report

RECIPES = (("isotropic", 0.1, None), ("isotropic", 0.25, None), ("isotropic", 0.5, None),
           ("covariance", 0.5, None), ("principal", 0.5, 24), ("principal", 0.5, 48))
SIZES = (10_000, 100_000, 1_000_000)


def measure_lid_grid(*, dataset: str = "ml-100k", n_queries: int = 200, seed: int = 42, progress=print) -> dict:
    config = ann.AnnConfig(dataset=dataset)
    real, source = ann.load_real_embeddings(config, progress=progress)
    records = []
    for kind, scale, rank in RECIPES:
        rank = rank or ann.NOISE_RANK
        queries = ann.make_queries(real, n_queries, seed, kind, rank, scale)
        catalogue = ann.make_catalogue(real, max(SIZES), seed, kind, rank, scale)
        for size in SIZES:
            items = catalogue[:size]  # catalogues nest, as in the suite
            nearest = ann.exact_search(items, queries, k=ann.LID_NEIGHBOURS)
            lid = ann.local_intrinsic_dimension(items, queries, nearest)
            records.append({"noise": kind, "scale": scale, "rank": rank if kind == "principal" else None,
                            "size": size, "lid": round(lid, 2)})
            progress(f"{kind:10s} scale {scale:<4} rank {records[-1]['rank'] or '-':<3} {size:>9,}: LID {lid:.1f}")
    return {"suite": "ann-lid", "command": command_line("python -m lmrec.benchmarks.ann_lid"),
            "machine": machine_facts(), "embeddings_source": source, "n_queries": n_queries,
            "real_lid": round(ann.real_intrinsic_dimension(real, seed), 2), "records": records}


def render_markdown(payload: dict) -> str:
    rows = []
    for kind, scale, rank in RECIPES:
        cells = {r["size"]: r["lid"] for r in payload["records"]
                 if (r["noise"], r["scale"], r["rank"]) == (kind, scale, rank)}
        rows.append([kind, f"{scale}×", "all" if rank is None else str(rank)]
                    + [f"{cells[s]:.1f}" if s in cells else "–" for s in SIZES])
    return "\n".join(["# ANN catalogues: local intrinsic dimension by noise recipe", "",
                      f"Command: `{payload['command']}`  ",
                      f"Vectors: {payload['embeddings_source']}; {payload['n_queries']} queries drawn by each "
                      "recipe, median maximum-likelihood LID from their 20 nearest items.  ",
                      f"The real vectors' own LID (a fifth of them as queries against the rest): "
                      f"**{payload['real_lid']:.1f}**.", ""]
                     + markdown_table(["noise", "scale", "directions"] + [f"{s:,} items" for s in SIZES], rows)
                     + [""]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=ann.MOVIELENS, default="ml-100k")
    parser.add_argument("--queries", type=positive_int, default=200)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    with parser_errors(parser):
        check_results_file(args.out, "ann-lid")
    started = time.perf_counter()
    payload = measure_lid_grid(dataset=args.dataset, n_queries=args.queries)
    payload["seconds"] = round(time.perf_counter() - started, 1)
    for path in write_report(payload, Path(args.out), "ann-lid", markdown=render_markdown(payload), plot=None):
        if path.exists():
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
