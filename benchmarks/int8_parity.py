"""How close each int8 quantisation recipe stays to fp32, and how fast it encodes, on real texts.

    .venv/bin/python -m lmrec.benchmarks.int8_parity --data-dir ../shared/data/ml-100k

Exports the packaged MiniLM once and quantises it three ways for the preset this CPU runs: Optimum's
preset as it comes (lmrec's recipe before this suite compared them), and lmrec's recipe
(`quantization_config`: signed weights, 7-bit where the kernel saturates, attention products in fp32)
with per-tensor and per-channel weight scales. Reports each int8 model's cosine to the fp32 embeddings
of the same texts (the first 400 item texts and the profiles of the first 200 users, from their last 20
items) and its speed on 256 of them (half items, half profiles), the recipes alternating round by round
so machine noise hits all alike. Writes `benchmarks/results/int8-parity.{json,md}`.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
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


def measure_recipes(texts: list[str], work: Path, *, rounds: int = 8) -> list[dict]:
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from lmrec.encoder import OnnxTextEncoder
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, OPTIMUM_PRESETS, EncoderExportConfig, activation_matmuls,
                                             export_encoder, quantization_config, quantize_int8, row_cosines)

    export = export_encoder(EncoderExportConfig(output_dir=work / "export"), progress=lambda *_: None)
    preset = export.quantization_preset
    reference = OnnxTextEncoder(export.directory, onnx_file=FP32_FILE).encode(texts)
    recipes = {
        "optimum preset": (True, getattr(AutoQuantizationConfig, OPTIMUM_PRESETS.get(preset, preset))(
            is_static=False, per_channel=True)),
        "lmrec, per-tensor": (False, None),
        "lmrec, per-channel (served)": (True, None),
    }
    encoders = {"fp32": OnnxTextEncoder(export.directory, onnx_file=FP32_FILE)}
    rows = {}
    for name, (per_channel, qconfig) in recipes.items():
        directory = work / f"recipe-{len(rows)}"
        shutil.copytree(export.directory, directory)
        (directory / INT8_FILE).unlink()
        qconfig = qconfig or quantization_config(directory / FP32_FILE, preset, per_channel=per_channel)
        quantize_int8(directory, preset, per_channel=per_channel, qconfig=qconfig)
        encoders[name] = OnnxTextEncoder(directory, onnx_file=INT8_FILE)
        cosines = row_cosines(reference, encoders[name].encode(texts))
        quantised = _count_quantised_matmuls(directory / INT8_FILE)
        rows[name] = {"recipe": name, "preset": preset, "per_channel": per_channel,
                      "weights": _weights_label(qconfig),
                      "matmuls_quantised": quantised, "activation_matmuls": len(activation_matmuls(directory / FP32_FILE)),
                      "mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
                      "p01_cosine": float(np.quantile(cosines, 0.01))}
    rows["fp32"] = {"recipe": "fp32", "preset": None, "per_channel": None, "weights": "fp32", "matmuls_quantised": 0,
                    "activation_matmuls": None, "mean_cosine": 1.0, "min_cosine": 1.0, "p01_cosine": 1.0}
    half = len(texts) // 2
    sample = texts[:128] + texts[-128:] if half >= 128 else texts[:256]
    seconds = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode(sample, batch_size=32)
            seconds[name].append(time.perf_counter() - started)
    for name, row in rows.items():
        row["texts_per_s"] = round(len(sample) / float(np.median(seconds[name])), 1)
        row["seconds_per_round"] = [round(s, 3) for s in seconds[name]]
    baseline = rows["optimum preset"]["texts_per_s"]
    for row in rows.values():
        row["speed_vs_optimum_preset"] = round(row["texts_per_s"] / baseline, 3)
    return [rows[name] for name in encoders]


def _weights_label(qconfig) -> str:
    from onnxruntime.quantization import QuantType

    kind = "s8" if qconfig.weights_dtype == QuantType.QInt8 else "u8"
    return f"{kind}, 7-bit" if qconfig.reduce_range else kind


def _count_quantised_matmuls(onnx_path: Path) -> int:
    import onnx

    return sum(n.op_type == "MatMulInteger" for n in onnx.load(str(onnx_path)).graph.node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    texts = parity_texts(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="lmrec-int8-parity-") as tmp:
        rows = measure_recipes(texts, Path(tmp))
    command = "python -m lmrec.benchmarks.int8_parity " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"suite": "int8-parity", "command": command, "machine": machine_facts(),
               "n_texts": len(texts), "recipes": rows}
    lines = ["# int8 recipes against fp32", "",
             f"{len(texts)} ml-100k texts (400 items, 200 profiles); speed on 256 of them (half items, half "
             "profiles), batches of 32, median of the rounds, recipes alternating.", ""]
    lines += markdown_table(
        ["recipe", "weights", "MatMuls in int8", "mean cosine", "1st percentile", "min cosine", "texts/s",
         "speed vs Optimum's preset"],
        [[r["recipe"], r["weights"], r["matmuls_quantised"], f"{r['mean_cosine']:.4f}", f"{r['p01_cosine']:.4f}",
          f"{r['min_cosine']:.4f}", f"{r['texts_per_s']:.1f}", f"{r['speed_vs_optimum_preset']:.2f}x"] for r in rows])
    write_report(payload, args.out_dir, "int8-parity", markdown="\n".join(lines) + "\n", plot=None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
