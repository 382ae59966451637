"""Text → embedding with an exported ONNX encoder: the one code path offline and inside Triton.

The exported graph already does mean pooling and L2 normalisation (it returns `sentence_embedding`),
so this module only tokenises and batches. Texts are grouped by token length before batching so a
batch of short texts is not padded to the length of one long text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.ort_options import denormals_flushed, open_session, provider_names, session_options

ENCODER_SETTINGS_FILE = "encoder.json"
TOKENIZER_FILE = "tokenizer.json"
EMBEDDING_OUTPUT = "sentence_embedding"


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """What a runtime needs to reproduce the exported encoder's behaviour; stored beside the ONNX file."""

    onnx_file: str
    max_length: int
    embedding_dim: int
    input_names: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "input_names": list(self.input_names)}, indent=2)

    @staticmethod
    def read(directory: Path) -> "EncoderSettings":
        raw = json.loads((Path(directory) / ENCODER_SETTINGS_FILE).read_text())
        raw["input_names"] = tuple(raw["input_names"])
        return EncoderSettings(**raw)


def length_buckets(lengths: np.ndarray, order: np.ndarray, batch_size: int, *, growth: float = 1.3,
                   min_width: int = 16) -> list[np.ndarray]:
    """Split `order` (indices sorted by length) into runs of similar length, at most `batch_size` each.

    A run ends when the next text is more than `growth` times longer than the run's first one (and
    longer than `min_width` tokens): every text of a run is padded to its longest, so mixing 15-token
    titles with 150-token profiles would spend most of the compute on padding.
    """
    buckets, start = [], 0
    for position in range(1, len(order) + 1):
        if position == len(order) or position - start >= batch_size or (
                lengths[order[position]] > max(min_width, growth * lengths[order[start]])):
            buckets.append(order[start:position])
            start = position
    return buckets


DEVICES = ("cpu", "cuda")
# Why the int8 export never runs on a GPU: ONNX Runtime's CUDA MatMulInteger takes s8 x s8 only, and the
# dynamic-int8 export feeds it u8 activations.
INT8_ON_CUDA = ("the dynamic-int8 export's u8 x s8 MatMulInteger has no CUDA kernel in ONNX Runtime (its "
                "products would run on the CPU)")


def execution_providers(device: str = "cpu", *, device_id: int = 0, available: list[str] | None = None) -> list:
    """ONNX Runtime providers for `device`: the CPU, or CUDA on GPU `device_id` with the CPU for the few
    operators CUDA lacks. Asking for CUDA from an onnxruntime built without it is an error, not a silent
    fall-back to the CPU: a GPU benchmark or a KIND_GPU Triton instance must not measure the CPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        import onnxruntime as ort

        raise RuntimeError(f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (it has "
                           f"{', '.join(available)}): install onnxruntime-gpu in place of onnxruntime to run "
                           "the encoder on the GPU")
    # TF32 off: the CUDA provider's default turns fp32 products into TF32 ones, which is another precision
    # (and would be timed against an fp32 peak).
    return [("CUDAExecutionProvider", {"device_id": int(device_id), "use_tf32": 0}), "CPUExecutionProvider"]


def load_tokenizer(directory: Path, settings: EncoderSettings):
    """The export's tokenizer, unpadded and truncated where the PyTorch model truncates."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(directory) / TOKENIZER_FILE))
    # The shipped tokenizer.json pads every text to 128; pad per batch instead and truncate where
    # the PyTorch model does, so served embeddings equal the reference ones.
    tokenizer.no_padding()
    tokenizer.enable_truncation(settings.max_length)
    return tokenizer


def padded_feeds(encodings, input_names) -> dict[str, np.ndarray]:
    """The encoder's inputs for one batch of tokenizer encodings, padded to the longest of them."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), np.int64)
    mask = np.zeros((len(encodings), width), np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, :len(encoding.ids)] = encoding.ids
        mask[row, :len(encoding.ids)] = 1
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


class OnnxTextEncoder:
    """Tokenizer + ONNX Runtime session for one exported encoder directory."""

    def __init__(self, directory: Path | str, *, onnx_file: str | None = None, threads: int | None = None,
                 providers: list | None = None, spin: bool = True, profile_prefix: str | None = None) -> None:
        directory = Path(directory)
        self.settings = EncoderSettings.read(directory)
        self.onnx_file = onnx_file or self.settings.onnx_file
        self.tokenizer = load_tokenizer(directory, self.settings)
        # ORT's worker threads spin after each run, waiting for the next. Where they share the cores with
        # other busy processes (the Triton model beside the gateway), that spinning steals them: `spin=False`.
        options = session_options(threads=threads or int(os.environ.get("LMREC_ORT_THREADS", "0")), spin=spin)
        if profile_prefix:  # ONNX Runtime's profiler (benchmarks/encoder_profile.py); `session.end_profiling()`
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        providers = providers or ["CPUExecutionProvider"]
        self.session = open_session(str(directory / self.onnx_file), options, providers)
        wanted = provider_names(providers)[0]
        if self.session.get_providers()[0] != wanted:
            # ONNX Runtime falls back to the CPU, with only a printed warning, when a provider fails to start
            # (no GPU, CUDA or cuDNN libraries that do not match).
            raise RuntimeError(f"ONNX Runtime could not start {wanted} for {directory / self.onnx_file} (it runs "
                               f"{', '.join(self.session.get_providers())}); see its log above for why")
        self.dim = self.settings.embedding_dim

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in the order of `texts`."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        order = np.argsort(lengths, kind="stable")
        with denormals_flushed():  # the masked softmax's denormals (lmrec/ort_options.py)
            for chunk in length_buckets(lengths, order, batch_size):
                feeds = padded_feeds([encodings[index] for index in chunk], self.settings.input_names)
                out[chunk] = self.session.run([EMBEDDING_OUTPUT], feeds)[0]
        return out
