"""What the encoder's token limit costs when served: every user's profile text, encoded at each limit.

    .venv/bin/python -m lmrec.benchmarks.profile_length --data-dir ../shared/data/ml-100k

The fine-tuned encoder reads 256 tokens, as the zero-shot one does, since that length was chosen on
validation (docs/quality.md); before, it read 128, and most served profiles are longer than that. This
suite measures what the longer limit costs a known user whose vector is not cached. It exports the
packaged MiniLM once (fp32 and the served int8 recipe: the cost depends on the shape, not on the
weights, so a fine-tuned export costs the same) or reads `--encoder-dir`, builds every user's profile
text as the gateway does (`profile_text_of`, newest items first), and encodes them at each
`--max-lengths` limit: one text at a time (an uncached Recommend) and in batches of 32 (grouped by
length, as the encoder does). Limits and precisions alternate round by round, so machine noise hits
all alike. Writes `<--out>/<--name>.{json,md,png}` (default `benchmarks/results/profile-length`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmrec.benchmarks.cli_checks import check_results_file, parser_errors
from lmrec.benchmarks.machine import machine_facts
from lmrec.benchmarks.report import markdown_table, write_report
from lmrec.cli_types import int_in_range

if TYPE_CHECKING:
    from lmrec.export.loaders import DataConfig

# MiniLM's position embeddings: a limit above this cannot be encoded.
MAX_POSITIONS = 512


def served_profile_texts(data: DataConfig, users: int | None = None) -> list[str]:
    """The profile text the gateway builds for each user with a history (all of it, newest first); the
    first `users` such users only, when given."""
    from lmrec.export.dataset import histories_of
    from lmrec.export.interest_tags import profile_texts
    from lmrec.export.loaders import load_dataset

    dataset = load_dataset(data).dataset
    histories = histories_of(dataset.interactions, dataset.n_users)
    known = np.array([u for u in range(dataset.n_users) if len(histories[u])][:users])
    return profile_texts(dataset, known, [histories[u] for u in known])


def token_counts(encoder, texts: list[str]) -> np.ndarray:
    """Each text's token count with no limit (special tokens included)."""
    encoder.tokenizer.no_truncation()
    return np.array([len(e.ids) for e in encoder.tokenizer.encode_batch(texts)])


def measure_lengths(encoders: dict, texts: list[str], max_lengths: list[int], *, rounds: int = 5,
                    singles: int = 200, seed: int = 0) -> list[dict]:
    """One row per (precision, limit): median ms per text one at a time, texts/s in batches of 32, and both
    against the shortest limit as the median of the per-round ratios (the limits of a round ran side by
    side, so drift between rounds cancels). `encoders` maps a precision to an `OnnxTextEncoder`."""
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in rng.choice(len(texts), min(singles, len(texts)), replace=False)]
    single_ms = {(p, n): [] for p in encoders for n in max_lengths}
    batch_s = {(p, n): [] for p in encoders for n in max_lengths}
    longest = {}
    order = [(p, n) for p in encoders for n in max_lengths]
    for round_ in range(rounds):
        # Reverse the order every other round so that no limit always runs first (warm caches, drift).
        for precision, limit in order if round_ % 2 == 0 else order[::-1]:
            encoder = encoders[precision]
            encoder.tokenizer.enable_truncation(limit)
            # What the timed calls below read: the limit is in force.
            longest[precision, limit] = max(len(e.ids) for e in encoder.tokenizer.encode_batch(texts))
            encoder.encode(picked[:4], batch_size=1)  # warm both shapes
            encoder.encode(texts[:32], batch_size=32)
            times = []
            for text in picked:
                started = time.perf_counter()
                encoder.encode([text], batch_size=1)
                times.append(time.perf_counter() - started)
            single_ms[precision, limit].append(1000 * float(np.median(times)))
            started = time.perf_counter()
            encoder.encode(texts, batch_size=32)
            batch_s[precision, limit].append(time.perf_counter() - started)
    rows = []
    for precision in encoders:
        base = min(max_lengths)
        for limit in max_lengths:
            ms, seconds = single_ms[precision, limit], batch_s[precision, limit]
            rows.append({"precision": precision, "max_length": limit, "longest_encoded": longest[precision, limit],
                         "singles": len(picked), "batch1_median_ms": round(float(np.median(ms)), 3),
                         "batch1_ms_per_round": [round(v, 3) for v in ms],
                         "batch32_texts_per_s": round(len(texts) / float(np.median(seconds)), 1),
                         "batch32_seconds_per_round": [round(v, 3) for v in seconds],
                         "batch1_time_vs_shortest": round(float(np.median(
                             np.divide(ms, single_ms[precision, base]))), 3),
                         "batch32_rate_vs_shortest": round(float(np.median(
                             np.divide(batch_s[precision, base], seconds))), 3)})
    return rows


def length_facts(counts: np.ndarray, max_lengths: list[int]) -> dict:
    return {"n_texts": int(len(counts)), "median": float(np.median(counts)), "mean": round(float(counts.mean()), 1),
            "p90": float(np.percentile(counts, 90)), "max": int(counts.max()),
            "share_over": {str(n): round(float((counts > n).mean()), 4) for n in max_lengths}}


def render_markdown(payload: dict) -> str:
    facts = payload["token_counts"]
    over = ", ".join(f"{float(share):.1%} over {limit}" for limit, share in facts["share_over"].items())
    lines = ["# What the encoder's token limit costs, served profiles", "",
             f"Command: `{payload['command']}`  ",
             f"Machine: {payload['machine']['cpu_model']}, {payload['machine']['cores']} cores; encoder "
             f"`{payload['encoder']}`; ONNX Runtime in process, {payload['threads']} threads.", "",
             f"{facts['n_texts']} profile texts of {payload['dataset']} ("
             f"{'every user' if payload.get('users') is None else 'the first ' + str(payload['users']) + ' users'}"
             " with a history, as the gateway builds them): "
             f"tokens median {facts['median']:.0f}, mean {facts['mean']}, p90 {facts['p90']:.0f}, max {facts['max']}; "
             f"{over}. One text at a time: the median of {payload['rows'][0]['singles']} texts per round; batches "
             f"of 32: all texts; the median of {payload['rounds']} rounds, limits alternating. Against the shortest "
             "limit: the median of the per-round ratios (time: above 1 is slower; rate: below 1 is slower).", ""]
    lines += markdown_table(
        ["precision", "max_length", "longest text read (tokens)", "ms per text, one at a time", "time vs shortest",
         "texts/s, batches of 32", "rate vs shortest"],
        [[r["precision"], r["max_length"], r["longest_encoded"], f"{r['batch1_median_ms']:.2f}",
          f"{r['batch1_time_vs_shortest']:.3f}", f"{r['batch32_texts_per_s']:.1f}",
          f"{r['batch32_rate_vs_shortest']:.3f}"] for r in payload["rows"]])
    return "\n".join(lines) + "\n"


def plot_rows(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    colours = ["#7f7f7f", "#d62728", "#1f77b4", "#2ca02c"]
    for axis, key, label in ((axes[0], "batch1_median_ms", "ms per text, one at a time"),
                             (axes[1], "batch32_texts_per_s", "texts/s, batches of 32")):
        ticks, names = [], []
        for offset, precision in enumerate(precisions):
            mine = [r for r in rows if r["precision"] == precision]
            positions = np.arange(len(mine)) + offset * (len(mine) + 1)
            axis.bar(positions, [r[key] for r in mine], color=[colours[i % len(colours)] for i in range(len(mine))])
            ticks += list(positions)
            names += [f"{precision}\n{r['max_length']} tokens" for r in mine]
        axis.set_xticks(ticks, names, fontsize=8)  # once per axis: a second call would replace the first's
        axis.set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _limits(value: str) -> list[int]:
    try:
        limits = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected token limits such as 128,256") from None
    if not limits or limits[0] < 8 or limits[-1] > MAX_POSITIONS:
        raise argparse.ArgumentTypeError(f"{value!r}: each limit must be within 8..{MAX_POSITIONS} (the encoder's "
                                         "positions)")
    return limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="the MovieLens folder (not for synthetic)")
    parser.add_argument("--dataset", choices=("ml-100k", "ml-latest-small", "synthetic"), default="ml-100k",
                        help="whose profiles (default ml-100k; synthetic: the embedded data set, a smoke run)")
    parser.add_argument("--users", type=int_in_range(1, None, "--users"),
                        help="the first N users with a history only (default: every one)")
    parser.add_argument("--max-lengths", type=_limits, default=[128, 256], help="token limits (default 128,256)")
    parser.add_argument("--encoder-dir", type=Path,
                        help="an exported encoder folder (encoder.json beside model.onnx and model_int8.onnx), "
                             "e.g. a model repository's text_encoder/N; default: export the packaged MiniLM")
    parser.add_argument("--rounds", type=int_in_range(1, None, "--rounds"), default=5)
    parser.add_argument("--singles", type=int_in_range(1, None, "--singles"), default=200,
                        help="texts encoded one at a time per round")
    parser.add_argument("--threads", type=int_in_range(1, None, "--threads"), default=os.cpu_count() or 1,
                        help="ONNX Runtime threads (default: this machine's cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="result folder")
    parser.add_argument("--name", default="profile-length", help="result file stem")
    args = parser.parse_args(argv)
    if args.dataset != "synthetic" and args.data_dir is None:
        parser.error(f"--dataset {args.dataset} needs --data-dir (its MovieLens folder)")
    if args.encoder_dir is not None and not (args.encoder_dir / "encoder.json").is_file():
        parser.error(f"--encoder-dir {args.encoder_dir}: no encoder.json there (give an exported encoder folder)")
    from lmrec.export.cleaning import DataError
    from lmrec.export.loaders import DataConfig

    with parser_errors(parser, DataError):  # before the export and the timing
        check_results_file(args.out, args.name)
        texts = served_profile_texts(DataConfig(dataset=args.dataset, data_dir=args.data_dir), args.users)
    with tempfile.TemporaryDirectory(prefix="lmrec-profile-length-") as tmp:
        encoders, source = _encoders(args.encoder_dir, Path(tmp), args.threads)
        counts = token_counts(next(iter(encoders.values())), texts)
        rows = measure_lengths(encoders, texts, args.max_lengths, rounds=args.rounds, singles=args.singles)
    command = "python -m lmrec.benchmarks.profile_length " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"suite": "profile-length", "command": command, "machine": machine_facts(), "dataset": args.dataset,
               "users": args.users, "encoder": source, "threads": args.threads, "rounds": args.rounds,
               "token_counts": length_facts(counts, args.max_lengths), "rows": rows}
    markdown = render_markdown(payload)
    write_report(payload, args.out, args.name, markdown=markdown, plot=lambda png: plot_rows(rows, png))
    print(markdown)


def _encoders(encoder_dir: Path | None, work: Path, threads: int) -> tuple[dict, str]:
    """fp32 and int8 `OnnxTextEncoder`s of `encoder_dir` (the files it has), or of a fresh export."""
    from lmrec.encoder import OnnxTextEncoder
    from lmrec.export.encoder_export import FP32_FILE, INT8_FILE, EncoderExportConfig, export_encoder

    if encoder_dir is None:
        export = export_encoder(EncoderExportConfig(output_dir=work / "export"), progress=lambda *_: None)
        encoder_dir = export.directory
        source = "the packaged all-MiniLM-L6-v2, exported now"
    else:
        source = str(encoder_dir)
    files = {"fp32": FP32_FILE, "int8": INT8_FILE}
    encoders = {precision: OnnxTextEncoder(encoder_dir, onnx_file=name, threads=threads)
                for precision, name in files.items() if (encoder_dir / name).is_file()}
    if not encoders:
        raise SystemExit(f"--encoder-dir {encoder_dir}: neither {FP32_FILE} nor {INT8_FILE} is there")
    return encoders, source


if __name__ == "__main__":
    main()
