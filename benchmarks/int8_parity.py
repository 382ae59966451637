"""How close each int8 quantisation recipe stays to fp32, and how fast it encodes, on real texts.

    .venv/bin/python -m lmrec.benchmarks.int8_parity --data-dir ../shared/data/ml-100k

Exports the packaged MiniLM once and quantises it four ways for the preset this CPU runs: Optimum's
preset as it comes (lmrec's recipe before this suite compared them), and lmrec's recipe
(`quantization_config`: signed weights, 7-bit where the kernel saturates, attention products in fp32)
with per-tensor and per-channel weight scales, and the served one: per-channel, with the activations'
outlier channels shrunk first (export/outlier_smoothing.py). Two more routes to a faster or closer int8 model are
measured beside them, neither served: attention fused into ONNX Runtime's `Attention` op and quantised
as `QAttention` (from an eager-attention export: the default SDPA export has no pattern ONNX Runtime's
fusion recognises), and `MatMulNBits` (8-bit weights with a scale per block of 32 inputs, activations
quantised per block, int8 products). Reports each int8 model's cosine to the fp32 embeddings of the
same texts (the first 400 item texts and the profiles of the first 200 users, from their last 20
items) and its speed on 256 of them (half items, half profiles), the recipes alternating round by round
so machine noise hits all alike. Writes `<--out>/<--name>.{json,md}` (default `benchmarks/results/int8-parity`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lmrec.benchmarks.cli_checks import check_results_file, parser_errors
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
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, OPTIMUM_PRESETS, PARITY_TEXTS, EncoderExportConfig,
                                             activation_matmuls, export_encoder, quantization_config, quantize_int8,
                                             row_cosines)

    export = export_encoder(EncoderExportConfig(output_dir=work / "export"), progress=lambda *_: None)
    preset = export.quantization_preset
    reference = OnnxTextEncoder(export.directory, onnx_file=FP32_FILE).encode(texts)
    # name: (per-channel weight scales, Optimum config or None for lmrec's, outlier channels smoothed)
    recipes = {
        "optimum preset": (True, getattr(AutoQuantizationConfig, OPTIMUM_PRESETS.get(preset, preset))(
            is_static=False, per_channel=True), False),
        "lmrec, per-tensor": (False, None, False),
        "lmrec, per-channel": (True, None, False),
        SERVED: (True, None, True),
    }
    encoders = {"fp32": OnnxTextEncoder(export.directory, onnx_file=FP32_FILE)}
    rows: dict[str, dict] = {}

    def measure(name: str, directory: Path, **facts) -> None:
        encoders[name] = OnnxTextEncoder(directory, onnx_file=INT8_FILE)
        cosines = row_cosines(reference, encoders[name].encode(texts))
        ops = _op_counts(directory / INT8_FILE)
        rows[name] = {"recipe": name, "preset": preset, **facts,
                      "matmuls_quantised": _quantised_matmuls(ops), "attention_fused": ops["QAttention"],
                      "mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
                      "p01_cosine": float(np.quantile(cosines, 0.01))}

    for name, (per_channel, qconfig, smoothed) in recipes.items():
        directory = _fp32_copy(export.directory, work / f"recipe-{len(rows)}")
        weights = _weights_label(qconfig or quantization_config(directory / FP32_FILE, preset, per_channel=per_channel))
        report = quantize_int8(directory, preset, per_channel=per_channel, qconfig=qconfig,
                               smoothing_texts=PARITY_TEXTS if smoothed else ())
        measure(name, directory, per_channel=per_channel, weights=weights,
                activation_matmuls=len(activation_matmuls(directory / FP32_FILE)),
                outlier_smoothing=report.to_manifest() if report else None)
    for name, build in ((FUSED_ATTENTION, _fused_attention_int8), (BLOCKWISE, _blockwise_int8)):
        directory = _fp32_copy(export.directory, work / f"recipe-{len(rows)}")
        measure(name, directory, per_channel=build is _fused_attention_int8, weights=build(export, directory, preset),
                activation_matmuls=None)
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


@contextlib.contextmanager
def _quiet_logs():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _fp32_copy(exported: Path, directory: Path) -> Path:
    """A copy of the export without its int8 model, for a recipe to write its own."""
    from lmrec.export.encoder_export import INT8_FILE

    shutil.copytree(exported, directory)
    (directory / INT8_FILE).unlink()
    return directory


SERVED = "lmrec, per-channel, outliers smoothed (served)"
FUSED_ATTENTION = "fused attention (QAttention)"
BLOCKWISE = "8-bit blocks (MatMulNBits)"
BLOCK_SIZE = 32


def _fused_attention_int8(export, directory: Path, preset: str) -> str:
    """`directory`'s INT8_FILE: the eager-attention export, fused by ONNX Runtime's BERT optimiser
    (Attention, BiasGelu, EmbedLayerNormalization), then dynamic int8 with lmrec's weight settings and the
    fused attention as QAttention. ONNX Runtime's `quantize_dynamic`, since the fused ops are outside the
    ONNX domain that shape inference (and so Optimum's quantiser) types: their outputs default to float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    from optimum.exporters.onnx import onnx_export_from_model
    from sentence_transformers import SentenceTransformer

    from lmrec.export.encoder_export import FP32_FILE, INT8_FILE, REDUCED_RANGE_PRESETS, _keep_only_sentence_embedding

    eager = directory / "eager.onnx"
    model = SentenceTransformer(export.model, device="cpu",
                                model_kwargs={"attn_implementation": "eager"})
    with tempfile.TemporaryDirectory() as tmp:
        onnx_export_from_model(model, output=tmp, task="feature-extraction", library_name="sentence_transformers",
                               opset=18, do_validation=False)
        shutil.copy(Path(tmp) / FP32_FILE, eager)
    _keep_only_sentence_embedding(eager)
    config = model[0].auto_model.config
    with _quiet_logs():  # warns that symbolic shape inference cannot type the fused ops; expected here
        fused = optimize_model(str(eager), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, optimization_options=FusionOptions("bert"),
                               opt_level=0, use_gpu=False)
    fused.save_model_to_file(str(directory / "fused.onnx"))
    with _quiet_logs():  # advises a pre-processing pass that is for static (calibrated) quantisation
        quantize_dynamic(str(directory / "fused.onnx"), str(directory / INT8_FILE), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=preset in REDUCED_RANGE_PRESETS,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return "s8, 7-bit" if preset in REDUCED_RANGE_PRESETS else "s8"


def _blockwise_int8(export, directory: Path, preset: str) -> str:
    """`directory`'s INT8_FILE: every weight MatMul as `MatMulNBits`, symmetric 8-bit weights with one
    scale per block of BLOCK_SIZE inputs, activations quantised to int8 per block (accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from lmrec.export.encoder_export import FP32_FILE, INT8_FILE

    settings = {"bits": 8, "block_size": BLOCK_SIZE, "is_symmetric": True, "accuracy_level": 4}
    quantizer = MatMulNBitsQuantizer(str(export.directory / FP32_FILE), **settings,
                                     algo_config=DefaultWeightOnlyQuantConfig(**settings))
    with _quiet_logs():  # it logs every node it skips
        quantizer.process()
    quantizer.model.save_model_to_file(str(directory / INT8_FILE), use_external_data_format=False)
    return f"s8, blocks of {BLOCK_SIZE}"


def _smoothed_label(rows: list[dict]) -> str:
    served = next((r for r in rows if r["recipe"] == SERVED), {})
    report = served.get("outlier_smoothing") or {}
    return (f"{report.get('tensors_smoothed', '–')} activation tensors, channels divided by up to "
            f"{report.get('largest_factor', '–')}")


def _weights_label(qconfig) -> str:
    from onnxruntime.quantization import QuantType

    kind = "s8" if qconfig.weights_dtype == QuantType.QInt8 else "u8"
    return f"{kind}, 7-bit" if qconfig.reduce_range else kind


def _quantised_matmuls(ops: Counter) -> int:
    """Weight products in int8; a QAttention holds three (query, key and value), as in the unfused graph."""
    return ops["MatMulInteger"] + ops["MatMulNBits"] + 3 * ops["QAttention"]


def _op_counts(onnx_path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(onnx_path)).graph.node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="result folder")
    parser.add_argument("--name", default="int8-parity", help="result file stem")
    args = parser.parse_args(argv)
    from lmrec.export.cleaning import DataError

    with parser_errors(parser, DataError):  # before the export and the quantisations
        check_results_file(args.out, args.name)
        texts = parity_texts(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="lmrec-int8-parity-") as tmp:
        rows = measure_recipes(texts, Path(tmp))
    command = "python -m lmrec.benchmarks.int8_parity " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"suite": "int8-parity", "command": command, "machine": machine_facts(),
               "n_texts": len(texts), "recipes": rows}
    fused_layers = next((r["attention_fused"] for r in rows if r["recipe"] == FUSED_ATTENTION), "–")
    lines = ["# int8 recipes against fp32", "",
             f"{len(texts)} ml-100k texts (400 items, 200 profiles); speed on 256 of them (half items, half "
             "profiles), batches of 32, median of the rounds, recipes alternating. Served: lmrec's per-channel "
             f"recipe with outlier channels smoothed ({_smoothed_label(rows)}). Not served: `{FUSED_ATTENTION}` (ONNX Runtime's fused attention, quantised; layers fused: "
             f"{fused_layers}) and `{BLOCKWISE}` (8-bit weights with a scale per {BLOCK_SIZE} inputs, activations "
             "quantised per block, int8 products).", ""]
    lines += markdown_table(
        ["recipe", "weights", "MatMuls in int8", "mean cosine", "1st percentile", "min cosine", "texts/s",
         "speed vs Optimum's preset"],
        [[r["recipe"], r["weights"], r["matmuls_quantised"], f"{r['mean_cosine']:.4f}", f"{r['p01_cosine']:.4f}",
          f"{r['min_cosine']:.4f}", f"{r['texts_per_s']:.1f}", f"{r['speed_vs_optimum_preset']:.2f}x"] for r in rows])
    write_report(payload, args.out, args.name, markdown="\n".join(lines) + "\n", plot=None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
