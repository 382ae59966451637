"""How close each int8 quantisation recipe stays to fp32, on real item and profile texts.

    .venv/bin/python -m lmrec.benchmarks.int8_parity --data-dir ../shared/data/ml-100k

Exports the packaged MiniLM once, quantises it with per-tensor and per-channel weight scales (the
preset this CPU runs), and reports each int8 model's cosine to the fp32 embeddings of the same texts:
the first 400 item texts and the profiles of the first 200 users (their last 20 items). Writes
`benchmarks/results/int8-parity.{json,md}`. Timings are one pass over 256 texts, indicative only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lmrec.benchmarks.machine import machine_facts
from lmrec.benchmarks.report import markdown_table, write_report


def parity_texts(data_dir: Path, n_items: int = 400, n_users: int = 200) -> list[str]:
    from lmrec.export.dataset import histories_of
    from lmrec.export.interest_tags import profile_texts
    from lmrec.export.loaders import DataConfig, load_dataset
    from lmrec.text import item_text_of

    dataset = load_dataset(DataConfig(dataset="ml-100k", data_dir=data_dir)).dataset
    histories = histories_of(dataset.interactions, dataset.n_users)
    users = np.arange(min(n_users, dataset.n_users))
    return ([item_text_of(info) for info in dataset.items[:n_items]]
            + profile_texts(dataset, users, [histories[u][-20:] for u in users]))


def measure_recipes(texts: list[str], work: Path) -> list[dict]:
    from lmrec.encoder import OnnxTextEncoder
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, EncoderExportConfig, export_encoder,
                                             quantize_int8, row_cosines)

    export = export_encoder(EncoderExportConfig(output_dir=work / "export"), progress=lambda *_: None)
    reference = OnnxTextEncoder(export.directory, onnx_file=FP32_FILE).encode(texts)
    rows = []
    for per_channel in (False, True):
        directory = work / ("per-channel" if per_channel else "per-tensor")
        shutil.copytree(export.directory, directory)
        (directory / INT8_FILE).unlink()
        quantize_int8(directory, export.quantization_preset, per_channel=per_channel)
        encoder = OnnxTextEncoder(directory, onnx_file=INT8_FILE)
        cosines = row_cosines(reference, encoder.encode(texts))
        started = time.perf_counter()
        encoder.encode(texts[:256])
        rows.append({"weight_scales": directory.name, "preset": export.quantization_preset,
                     "mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
                     "p01_cosine": float(np.quantile(cosines, 0.01)),
                     "seconds_256_texts": round(time.perf_counter() - started, 3)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    texts = parity_texts(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="lmrec-int8-parity-") as tmp:
        rows = measure_recipes(texts, Path(tmp))
    payload = {"suite": "int8-parity", "machine": machine_facts(), "n_texts": len(texts), "recipes": rows}
    lines = ["# int8 recipes against fp32", "", f"{len(texts)} ml-100k texts (400 items, 200 profiles).", ""]
    lines += markdown_table(["weight scales", "preset", "mean cosine", "1st percentile", "min cosine", "256 texts (s)"],
                            [[r["weight_scales"], r["preset"], f"{r['mean_cosine']:.4f}", f"{r['p01_cosine']:.4f}",
                              f"{r['min_cosine']:.4f}", f"{r['seconds_256_texts']:.2f}"] for r in rows])
    write_report(payload, args.out_dir, "int8-parity", markdown="\n".join(lines) + "\n", plot=None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
