"""Encoder suite: the paths it knows (names, groups, precision, batching), the settings of one run
(`EncoderBenchConfig`), and the expansion of path groups given on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


BASELINE_PATH = "sentence-transformers"
ONNX_PATHS = {"onnx-fp32": "fp32", "onnx-int8": "int8"}
# path -> (precision, dynamic batching)
TRITON_PATHS = {"triton-int8": ("int8", True), "triton-fp32": ("fp32", True),
                "triton-int8-nobatch": ("int8", False), "triton-fp32-nobatch": ("fp32", False)}
INFINITY_PATH = "infinity-emb"
ALL_PATHS = (BASELINE_PATH, *ONNX_PATHS, *TRITON_PATHS, INFINITY_PATH)
SERVED_PATHS = frozenset((*TRITON_PATHS, INFINITY_PATH))
PATH_ALIASES = {"all": ALL_PATHS, "onnx": tuple(ONNX_PATHS), "triton": tuple(TRITON_PATHS), "infinity": (INFINITY_PATH,)}
INT8_PATHS = ("onnx-int8", "triton-int8", "triton-int8-nobatch")
FP32_PATHS = ("onnx-fp32", "triton-fp32", "triton-fp32-nobatch", BASELINE_PATH, INFINITY_PATH)
EXPORT_MARKER = "bench-export.json"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_data_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "data" / "ml-100k"


def _default_model() -> str:
    from lmrec.export.encoder_export import default_model_path

    return default_model_path()


def _default_infinity_venv() -> Path:
    from .peers.infinity import DEFAULT_VENV

    return DEFAULT_VENV


@dataclass(frozen=True, kw_only=True)
class EncoderBenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64)
    concurrency: tuple[int, ...] = (1, 2, 4, 8)  # served paths only; in-process paths run one caller
    rounds: int = 3
    n_texts: int = 512  # sampled half item texts, half user profile texts
    paths: tuple[str, ...] = ALL_PATHS
    dataset: str = "ml-100k"
    data_dir: Path = field(default_factory=_default_data_dir)
    synthetic: object | None = None  # a SyntheticConfig: a small synthetic data set instead of `dataset`
    csv: object | None = None  # a CsvColumns: the layout of a generic CSV data set (dataset="csv")
    model: str = field(default_factory=_default_model)  # the sentence-transformers folder every path serves
    work_dir: Path = Path("benchmarks/results/tmp/encoder")  # export cache, model repository, server logs
    export_dir: Path | None = None  # an existing export (model.onnx + model_int8.onnx); None: export into work_dir
    out_dir: Path = Path("benchmarks/results")
    name: str = "encoder"
    seed: int = 42
    # Per cell: measure at least min_seconds and min_requests (whichever ends later), at most max_seconds.
    min_seconds: float = 2.0
    min_requests: int = 8
    max_seconds: float = 15.0
    gemm_size: int = 2048
    gemm_repeats: int = 5
    infinity_venv: Path = field(default_factory=_default_infinity_venv)
    triton_startup_timeout_s: float = 240.0
    # "cuda": sentence-transformers on the GPU, ONNX Runtime's CUDA provider, Triton instances KIND_GPU and
    # the GEMM peaks on the GPU. Paths the machine cannot run that way are recorded as errors, not run on the CPU.
    device: str = "cpu"


def expand_paths(names) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        for path in PATH_ALIASES.get(name, (name,)):
            if path not in ALL_PATHS:
                raise ValueError(f"unknown encoder path {path!r} (known: {', '.join(ALL_PATHS)}; "
                                 f"groups: {', '.join(PATH_ALIASES)})")
            if path not in out:
                out.append(path)
    return tuple(out)
