"""Optimum export of the packaged MiniLM: parity with PyTorch, graph outputs, int8, quantisation presets."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lmrec.encoder import EMBEDDING_OUTPUT, OnnxTextEncoder
from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, PARITY_TEXTS, EncoderExportConfig, ParityError,
                                         export_encoder, pick_quantization_preset, sha256_of)

# Not in PARITY_TEXTS: the gate must hold on texts the export never checked.
FRESH_TEXTS = [
    "Jurassic Park (1993). Genres: Action, Adventure, Sci-Fi. Tags: dinosaurs, spielberg.",
    "A 53-year-old female librarian. Recently liked: Emma (1996) [Drama, Romance]; Persuasion (1995) [Romance].",
    "Zwölf Geschworene — ein Gerichtsdrama über Zweifel. 日本語のテキストも少し。",
    "robots",
    "Ocean's Eleven: a charming crew plans the heist of three Las Vegas casinos on the night of a big fight, "
    "while the owner dates the leader's ex-wife and the security vault hides more than money. " * 4,
    "?!",
]


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    from lmrec.export.encoder_export import default_model_path

    return SentenceTransformer(default_model_path(), device="cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_fresh_texts_are_not_the_builtin_sample():
    assert not set(FRESH_TEXTS) & set(PARITY_TEXTS)


def test_fp32_onnx_matches_pytorch_on_fresh_texts(reference_model, exported_encoder_dir):
    expected = reference_model.encode(FRESH_TEXTS, convert_to_numpy=True)
    got = OnnxTextEncoder(exported_encoder_dir, onnx_file=FP32_FILE, threads=2).encode(FRESH_TEXTS)
    assert got.shape == expected.shape
    assert _cosines(expected, got).min() >= 0.999


def test_exported_graph_has_only_the_sentence_embedding_output(exported_encoder_dir):
    import onnx

    for name in (FP32_FILE, INT8_FILE):
        graph = onnx.load(str(exported_encoder_dir / name), load_external_data=False).graph
        assert [o.name for o in graph.output] == [EMBEDDING_OUTPUT], name


def test_int8_exists_and_its_drift_is_recorded(encoder_export, reference_model):
    assert encoder_export.int8_file == INT8_FILE
    assert (encoder_export.directory / INT8_FILE).is_file()
    parity = encoder_export.parity
    assert parity["n_texts"] == len(PARITY_TEXTS)
    assert parity["fp32_min_cosine"] >= 0.999
    # The recorded int8 numbers are measurements of this very file, not placeholders.
    expected = reference_model.encode(list(PARITY_TEXTS), convert_to_numpy=True)
    int8 = OnnxTextEncoder(encoder_export.directory, onnx_file=INT8_FILE, threads=2).encode(list(PARITY_TEXTS))
    cosines = _cosines(expected, int8)
    assert parity["int8_min_cosine"] == pytest.approx(float(cosines.min()), abs=1e-4)
    assert parity["int8_mean_cosine"] == pytest.approx(float(cosines.mean()), abs=1e-4)
    assert parity["int8_min_cosine"] <= parity["int8_mean_cosine"] <= 1.0


def test_export_record_checksums_and_settings(encoder_export):
    assert set(encoder_export.checksums) == {FP32_FILE, INT8_FILE, "tokenizer.json", "encoder.json"}
    for name, checksum in encoder_export.checksums.items():
        assert sha256_of(encoder_export.directory / name) == checksum
    assert encoder_export.settings.embedding_dim == 384
    assert encoder_export.settings.max_length == 256
    manifest = encoder_export.to_manifest()
    assert manifest["directory"] == str(encoder_export.directory)
    assert manifest["settings"]["onnx_file"] == FP32_FILE


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512"),
        ({"avx2", "avx512f"}, "x86_64", "avx2"),  # AVX-512 without BW is not enough
        ({"avx2", "avx_vnni"}, "x86_64", "avx_vnni"),  # Alder Lake and later cores without AVX-512
        ({"avx2", "avx512f", "avx512bw", "avx_vnni", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "fma"}, "x86_64", "avx2"),
        (set(), "x86_64", "avx2"),
        ({"avx512_vnni"}, "aarch64", "arm64"),
        (set(), "arm64", "arm64"),
    ],
)
def test_pick_quantization_preset(flags, machine, expected):
    assert pick_quantization_preset(flags, machine) == expected


def test_impossible_parity_threshold_refuses_the_export(tmp_path):
    with pytest.raises(ParityError, match="refused") as raised:
        export_encoder(EncoderExportConfig(output_dir=tmp_path / "out", quantize=False, parity_min_cosine=1.0001),
                       progress=lambda line: None)
    assert "1.0001" in str(raised.value)


def test_int8_uses_per_channel_scales_and_passes_its_accuracy_gate(encoder_export):
    assert encoder_export.quantization_per_channel is True
    assert encoder_export.parity["int8_min_cosine"] >= EncoderExportConfig(output_dir=encoder_export.directory).int8_min_cosine
    assert encoder_export.to_manifest()["quantization_per_channel"] is True
    # The served recipe shrinks the activations' outlier channels first, and the manifest says how much.
    smoothing = encoder_export.to_manifest()["outlier_smoothing"]
    assert smoothing["tensors_smoothed"] > 0 and smoothing["largest_factor"] > 1


def test_an_int8_model_below_its_accuracy_gate_is_refused(tmp_path):
    # No int8 model matches PyTorch to 0.99999: the gate must fire and name the measured cosine.
    with pytest.raises(ParityError, match=r"int8 model disagrees with PyTorch: min cosine 0\.9\d+ < 0\.99999"):
        export_encoder(EncoderExportConfig(output_dir=tmp_path / "strict", int8_min_cosine=0.99999),
                       progress=lambda *_: None)


def test_the_export_recipe_tells_apart_what_changes_the_files(tmp_path):
    from lmrec.export.encoder_export import export_recipe

    recipes = {export_recipe(EncoderExportConfig(output_dir=tmp_path, **settings)) for settings in
               ({}, {"per_channel": False}, {"quantize": False}, {"opset": 17}, {"smooth_outliers": False},
                 {"quantization_preset": "arm64" if pick_quantization_preset() != "arm64" else "avx2"})}
    assert len(recipes) == 6
    # "auto" names the preset it resolves to on this CPU.
    auto = export_recipe(EncoderExportConfig(output_dir=tmp_path))
    assert pick_quantization_preset() in auto and "auto" not in auto


def test_only_products_with_a_constant_weight_are_quantised(encoder_export):
    # Attention's query x key and probabilities x value stay fp32: per-call per-tensor scales flatten
    # the softmax probabilities. Every other MatMul (the dense layers) runs in int8.
    import onnx

    from lmrec.export.encoder_export import activation_matmuls

    directory = encoder_export.directory
    fp32_matmuls = [n.name for n in onnx.load(str(directory / FP32_FILE)).graph.node if n.op_type == "MatMul"]
    kept = activation_matmuls(directory / FP32_FILE)
    layers = 6  # MiniLM-L6: two activation products per layer
    assert len(kept) == 2 * layers and all(re.search(r"/attention/self/MatMul(_1)?$", name) for name in kept)
    int8 = onnx.load(str(directory / INT8_FILE)).graph
    assert sorted(n.name for n in int8.node if n.op_type == "MatMul") == sorted(kept)
    assert sum(n.op_type == "MatMulInteger" for n in int8.node) == len(fp32_matmuls) - len(kept)
    # The embeddings' Gather is not quantised: only MatMul is on the list.
    assert not any(n.op_type == "DequantizeLinear" for n in int8.node)


@pytest.mark.parametrize("preset, seven_bit", [("avx2", True), ("avx512", True), ("avx_vnni", False),
                                               ("avx512_vnni", False)])
def test_weights_are_signed_and_seven_bit_where_the_kernel_saturates(exported_encoder_dir, preset, seven_bit):
    from onnxruntime.quantization import QuantType

    from lmrec.export.encoder_export import quantization_config

    config = quantization_config(exported_encoder_dir / FP32_FILE, preset, per_channel=True)
    assert config.weights_dtype == QuantType.QInt8 and config.activations_dtype == QuantType.QUInt8
    assert config.reduce_range is seven_bit
    assert config.per_channel is True and list(config.operators_to_quantize) == ["MatMul"]


def test_served_int8_weights_are_signed_and_as_wide_as_this_cpus_preset_allows(encoder_export):
    import onnx
    from onnx import numpy_helper

    from lmrec.export.encoder_export import REDUCED_RANGE_PRESETS

    graph = onnx.load(str(encoder_export.directory / INT8_FILE)).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_quantized")]
    assert weights and all(w.dtype == np.int8 for w in weights)
    largest = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
    assert largest <= (64 if encoder_export.quantization_preset in REDUCED_RANGE_PRESETS else 127)
    assert largest >= 60  # per-channel scales use the range they have


def test_the_export_recipe_names_the_quantisation_recipe(tmp_path):
    # Int8 exports cached before a recipe change must not be served after it.
    from lmrec.export.encoder_export import QUANTIZATION_RECIPE, export_recipe

    assert QUANTIZATION_RECIPE in export_recipe(EncoderExportConfig(output_dir=tmp_path))
    assert QUANTIZATION_RECIPE not in export_recipe(EncoderExportConfig(output_dir=tmp_path, quantize=False))


def test_an_unnamed_activation_matmul_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from lmrec.export.encoder_export import activation_matmuls

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="unnamed MatMul"):
        activation_matmuls(tmp_path / "m.onnx")


def test_a_nan_cosine_fails_a_parity_gate_instead_of_slipping_through_min():
    from lmrec.export.encoder_export import _below, _worst, row_cosines

    zero_row = row_cosines(np.eye(3, 4, dtype=np.float32), np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]],
                                                                     np.float32))
    assert not np.isfinite(zero_row).all()
    assert _below(zero_row, 0.99) and _worst(zero_row) == 1
    assert not _below(np.array([1.0, 0.995]), 0.99) and _below(np.array([1.0, 0.98]), 0.99)
