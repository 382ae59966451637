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

if TYPE_CHECKING:
    from lmrec.export.loaders import DataConfig

# MiniLM's position embeddings: a limit above this cannot be encoded.
MAX_POSITIONS = 512


def served_profile_texts(data: DataConfig) -> list[str]:
    """The profile text the gateway builds for each user with a history (all of it, newest first)."""
    from lmrec.export.dataset import histories_of
    from lmrec.export.interest_tags import profile_texts
    from lmrec.export.loaders import load_dataset

    dataset = load_dataset(data).dataset
    histories = histories_of(dataset.interactions, dataset.n_users)
    users = np.array([u for u in range(dataset.n_users) if len(histories[u])])
    return profile_texts(dataset, users, [histories[u] for u in users])


def token_counts(encoder, texts: list[str]) -> np.ndarray:
    """Each text's token count with no limit (special tokens included)."""
    encoder.tokenizer.no_truncation()
    return np.array([len(e.ids) for e in encoder.tokenizer.encode_batch(texts)])


def measure_lengths(encoders: dict, texts: list[str], max_lengths: list[int], *, rounds: int = 5,
                    singles: int = 200, seed: int = 0) -> list[dict]:
    """One row per (precision, limit): median ms per text one at a time, texts/s in batches of 32, and both
    against the smallest limit. `encoders` maps a precision to an `OnnxTextEncoder`."""
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in rng.choice(len(texts), min(singles, len(texts)), replace=False)]
    single_ms = {(p, n): [] for p in encoders for n in max_lengths}
    batch_rate = {(p, n): [] for p in encoders for n in max_lengths}
    for round_ in range(rounds):
        # Alternate the order each round so that neither limit always runs first (warm caches, drift).
        order = [(p, n) for p in encoders for n in max_lengths]
        for precision, limit in order if round_ % 2 == 0 else order[::-1]:
            encoder = encoders[precision]
            encoder.tokenizer.enable_truncation(limit)
            encoder.encode(picked[:4], batch_size=1)  # warm this shape
            times = []
            for text in picked:
                started = time.perf_counter()
                encoder.encode([text], batch_size=1)
                times.append(time.perf_counter() - started)
            single_ms[precision, limit].append(1000 * float(np.median(times)))
            started = time.perf_counter()
            encoder.encode(texts, batch_size=32)
            batch_rate[precision, limit].append(len(texts) / (time.perf_counter() - started))
    rows = []
    for precision in encoders:
        base = min(max_lengths)
        base_ms, base_rate = (float(np.median(single_ms[precision, base])),
                              float(np.median(batch_rate[precision, base])))
        for limit in max_lengths:
            ms, rate = float(np.median(single_ms[precision, limit])), float(np.median(batch_rate[precision, limit]))
            rows.append({"precision": precision, "max_length": limit, "batch1_median_ms": round(ms, 3),
                         "batch1_ms_per_round": [round(v, 3) for v in single_ms[precision, limit]],
                         "batch32_texts_per_s": round(rate, 1),
                         "batch32_texts_per_s_per_round": [round(v, 1) for v in batch_rate[precision, limit]],
                         "batch1_ms_vs_shortest": round(ms / base_ms, 3),
                         "batch32_rate_vs_shortest": round(rate / base_rate, 3)})
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
             f"{facts['n_texts']} profile texts of {payload['dataset']} (every user's, as the gateway builds them): "
             f"tokens median {facts['median']:.0f}, mean {facts['mean']}, p90 {facts['p90']:.0f}, max {facts['max']}; "
             f"{over}. One text at a time: the median of {payload['singles']} texts per round; batches of 32: "
             f"all texts; the median of {payload['rounds']} rounds, limits alternating.", ""]
    lines += markdown_table(
        ["precision", "max_length", "ms per text, one at a time", "vs shortest", "texts/s, batches of 32",
         "vs shortest"],
        [[r["precision"], r["max_length"], f"{r['batch1_median_ms']:.2f}", f"{r['batch1_ms_vs_shortest']:.2f}x",
          f"{r['batch32_texts_per_s']:.1f}", f"{r['batch32_rate_vs_shortest']:.2f}x"] for r in payload["rows"]])
    return "\n".join(lines) + "\n"


def plot_rows(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    for axis, key, label in ((axes[0], "batch1_median_ms", "ms per text, one at a time"),
                             (axes[1], "batch32_texts_per_s", "texts/s, batches of 32")):
        for offset, precision in enumerate(precisions):
            mine = [r for r in rows if r["precision"] == precision]
            positions = np.arange(len(mine)) + offset * (len(mine) + 1)
            axis.bar(positions, [r[key] for r in mine], color=["#7f7f7f", "#d62728", "#1f77b4"][:len(mine)])
            axis.set_xticks(positions, [f"{precision}\n{r['max_length']}" for r in mine], fontsize=8)
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
    parser.add_argument("--data-dir", type=Path, required=True, help="the MovieLens folder")
    parser.add_argument("--dataset", choices=("ml-100k", "ml-latest-small"), default="ml-100k")
    parser.add_argument("--max-lengths", type=_limits, default=[128, 256], help="token limits (default 128,256)")
    parser.add_argument("--encoder-dir", type=Path,
                        help="an exported encoder folder (encoder.json beside model.onnx and model_int8.onnx), "
                             "e.g. a model repository's text_encoder/N; default: export the packaged MiniLM")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--singles", type=int, default=200, help="texts encoded one at a time per round")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (the machine's cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="result folder")
    parser.add_argument("--name", default="profile-length", help="result file stem")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.singles < 1 or args.threads < 1:
        parser.error(f"--rounds {args.rounds}, --singles {args.singles}, --threads {args.threads}: each must be >= 1")
    if args.encoder_dir is not None and not (args.encoder_dir / "encoder.json").is_file():
        parser.error(f"--encoder-dir {args.encoder_dir}: no encoder.json there (give an exported encoder folder)")
    from lmrec.export.cleaning import DataError
    from lmrec.export.loaders import DataConfig

    with parser_errors(parser, DataError):  # before the export and the timing
        check_results_file(args.out, args.name)
        texts = served_profile_texts(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
    with tempfile.TemporaryDirectory(prefix="lmrec-profile-length-") as tmp:
        encoders, source = _encoders(args.encoder_dir, Path(tmp), args.threads)
        counts = token_counts(next(iter(encoders.values())), texts)
        rows = measure_lengths(encoders, texts, args.max_lengths, rounds=args.rounds, singles=args.singles)
    command = "python -m lmrec.benchmarks.profile_length " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"suite": "profile-length", "command": command, "machine": machine_facts(), "dataset": args.dataset,
               "encoder": source, "threads": args.threads, "rounds": args.rounds, "singles": args.singles,
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
