"""Encoder suite: one model, one set of texts, through every way of running it; throughput, latency, FLOP/s.

`lmrec bench encoder` → benchmarks/results/encoder.{json,md,png}.

The model is the packaged all-MiniLM-L6-v2; the texts are the data set's item texts (`item_text_of`)
and user profile texts (`profile_text_of` of each user's recent items, newest first, with attributes),
sampled half and half: the real length mix the service encodes. Paths:

    sentence-transformers      PyTorch on the CPU, what most users would pick: the baseline of the ratios
    onnx-fp32, onnx-int8       lmrec's OnnxTextEncoder in process on the fp32 / dynamic-int8 export
    triton-int8, triton-fp32   the lmrec `text_encoder` python model in the real Triton over gRPC,
                               config.pbtxt as generated (dynamic batching on)
    triton-*-nobatch           the same with the `dynamic_batching` block removed (one request per execute)
    infinity-emb               the peer server (own venv, benchmarks/peers/setup_infinity.sh), torch engine

Every path is measured at each batch size (texts per request); the served paths also at each client
concurrency (closed loop: N requests in flight, each sent again as soon as it returns). The paths take
turns in rounds (round-robin, the order rotated each round) and each cell reports the median over the
rounds, so slow drifts of a shared machine hit every path alike. GEMM peaks are measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .machine import machine_facts
from .report import markdown_table, write_report

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


# --- texts and arithmetic ---------------------------------------------------------------------------------


def benchmark_texts(dataset, n_texts: int, seed: int) -> tuple[list[str], list[str]]:
    """(texts, kinds): n_texts sampled half from item texts, half from user profile texts, shuffled."""
    from lmrec.text import item_text_of, profile_text_of

    rng = np.random.default_rng(seed)
    items = [item_text_of(info) for info in dataset.items]
    profiles = []
    for user, history in enumerate(dataset.histories()):
        if len(history):
            attributes = dataset.users[user].attributes if user < len(dataset.users) else {}
            profiles.append(profile_text_of([dataset.items[i] for i in np.asarray(history)[::-1]], attributes=attributes))

    def sample(pool: list[str], k: int) -> list[str]:
        if not pool or k <= 0:
            return []
        index = rng.choice(len(pool), size=k, replace=k > len(pool))
        return [pool[i] for i in index]

    n_profiles = n_texts // 2 if profiles else 0
    chosen = [(t, "item") for t in sample(items, n_texts - n_profiles)] + [(t, "profile") for t in sample(profiles, n_profiles)]
    order = rng.permutation(len(chosen))
    return [chosen[i][0] for i in order], [chosen[i][1] for i in order]


@dataclass(frozen=True, kw_only=True)
class EncoderShape:
    hidden: int = 384
    intermediate: int = 1536
    layers: int = 6

    @staticmethod
    def of_model(model_dir: str | Path) -> "EncoderShape":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            return EncoderShape()
        raw = json.loads(path.read_text())
        return EncoderShape(hidden=int(raw.get("hidden_size", 384)), intermediate=int(raw.get("intermediate_size", 1536)),
                            layers=int(raw.get("num_hidden_layers", 6)))


def flops_per_sequence(n: int | np.ndarray, shape: EncoderShape = EncoderShape()):
    """Multiply-add FLOPs (2 per MAC) of the encoder's matrix products for one sequence of n tokens.

    Per BERT layer with hidden size h, intermediate size i and n tokens:

        Q, K, V and output projections   4 · (2·n·h·h)     = 2·n·4h²
        feed-forward up and down         2 · (2·n·h·i)     = 2·n·2hi
        attention scores Q·Kᵀ and P·V    2 · (2·n·n·h)     = 2·2·n²·h   (all heads together: h = heads · d)

        FLOPs ≈ L · [ 2·n·(4h² + 2·h·i) + 2·2·n²·h ]

    Embedding look-ups, layer norms, softmax, GELU and pooling are left out (a few % at these sizes).
    all-MiniLM-L6-v2: h=384, i=1536, L=6 → ≈ 21.2 MFLOP per token plus the n² attention term.
    """
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    n = np.asarray(n, dtype=np.float64)
    result = layers * (2.0 * n * (4 * h * h + 2 * h * i) + 2.0 * 2.0 * n * n * h)
    return float(result) if result.ndim == 0 else result


def token_lengths(tokenizer_file: Path, max_length: int, texts: list[str]) -> np.ndarray:
    """Token counts as the encoders execute them: special tokens included, truncated at max_length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return np.fromiter((len(e.ids) for e in tokenizer.encode_batch(texts)), np.int64, len(texts))


@dataclass(frozen=True)
class Chunk:
    """One request: `texts` and the FLOPs it costs padded to its longest text (as one batch executes it)."""

    texts: list[str]
    padded_tokens: int
    real_tokens: int
    flops_padded: float
    flops_real: float


def make_chunks(texts: list[str], lengths: np.ndarray, batch: int, shape: EncoderShape) -> list[Chunk]:
    """Requests of `batch` texts walking through the pool (wrapping), covering every text at least once."""
    n = len(texts)
    chunks = []
    for k in range(max(1, math.ceil(n / batch))):
        index = [(k * batch + j) % n for j in range(batch)]
        lens = lengths[index]
        width = int(lens.max())
        chunks.append(Chunk([texts[i] for i in index], padded_tokens=width * batch, real_tokens=int(lens.sum()),
                            flops_padded=batch * flops_per_sequence(width, shape),
                            flops_real=float(flops_per_sequence(lens, shape).sum())))
    return chunks


# --- GEMM peaks ------------------------------------------------------------------------------------------


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: thread pools, packing buffers
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fp32_gemm_peaks(size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an fp32 size³ matrix product: numpy (its BLAS) and torch, best of `repeats` each."""
    flops = 2.0 * size ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = {"numpy_matmul": flops / _best_seconds(lambda: a @ b, repeats) / 1e9}
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            out["torch_matmul"] = flops / _best_seconds(lambda: torch.mm(ta, tb), repeats) / 1e9
    except Exception as error:  # noqa: BLE001 - a peak we cannot measure is reported, not fatal
        out["torch_error"] = str(error)
    return out


def _matmul_integer_model(size: int):
    """ONNX graph Y = MatMulInteger(A uint8 [M,K], B int8 [K,N] constant, zero points): what dynamic-int8
    quantisation turns the encoder's weight products into."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = rng.integers(-127, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        initializer=[numpy_helper.from_array(weights, "B"),
                     numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
                     numpy_helper.from_array(np.array(0, np.int8), "b_zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def int8_gemm_peaks(size: int, repeats: int) -> dict[str, float]:
    """GOP/s (2 per int8 multiply-add) of a size³ ONNX Runtime MatMulInteger (u8·s8→s32): the kernel the
    dynamic-int8 export runs its weight products with; best of `repeats`.

    torch `_int_mm` is not used: on the CPU it runs a reference loop (≈0.5 GOP/s on the 2-core machine).
    """
    import onnxruntime as ort

    flops = 2.0 * size ** 3
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(_matmul_integer_model(size), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(2).integers(0, 256, (size, size), dtype=np.uint8)
    return {"ort_matmulinteger": flops / _best_seconds(lambda: session.run(["Y"], {"A": a}), repeats) / 1e9}


def measure_peaks(size: int, repeats: int) -> dict:
    fp32, int8 = fp32_gemm_peaks(size, repeats), int8_gemm_peaks(size, repeats)
    numbers = lambda d: [v for v in d.values() if isinstance(v, float)]  # noqa: E731
    return {"size": size, "fp32": fp32, "int8": int8, "fp32_gflops": max(numbers(fp32)), "int8_gops": max(numbers(int8))}


def merge_peaks(runs: list[dict]) -> dict:
    """Best of the peak measurements taken during the run (start and end)."""
    best = dict(runs[0])
    for run in runs[1:]:
        for key in ("fp32", "int8"):
            merged = dict(best[key])
            for name, value in run[key].items():
                if isinstance(value, float):
                    merged[name] = max(value, merged.get(name, 0.0) if isinstance(merged.get(name), float) else 0.0)
            best[key] = merged
        best["fp32_gflops"] = max(best["fp32_gflops"], run["fp32_gflops"])
        best["int8_gops"] = max(best["int8_gops"], run["int8_gops"])
    best["measurements"] = len(runs)
    return best


# --- the exports and the Triton model repository ---------------------------------------------------------


def prepare_export(config: EncoderBenchConfig, *, progress=print):
    """The fp32 + int8 export every ONNX and Triton path uses: `config.export_dir`, or exported once into
    `work_dir/export` and reused by later runs of the same model."""
    from lmrec.encoder import EncoderSettings
    from lmrec.export.encoder_export import FP32_FILE, INT8_FILE, EncoderExport, EncoderExportConfig, export_encoder

    def load(directory: Path, info: dict) -> EncoderExport:
        return EncoderExport(directory=directory, settings=EncoderSettings.read(directory), fp32_file=FP32_FILE,
                             int8_file=INT8_FILE, quantization_preset=info.get("quantization_preset"),
                             parity=info.get("parity", {}), checksums=info.get("checksums", {}),
                             model=info.get("model", config.model), seconds=float(info.get("seconds", 0.0)))

    if config.export_dir is not None:
        directory = Path(config.export_dir)
        for name in (FP32_FILE, INT8_FILE, "encoder.json", "tokenizer.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} missing: export_dir needs an fp32 + int8 export")
        marker = directory / EXPORT_MARKER
        return load(directory, json.loads(marker.read_text()) if marker.is_file() else {})
    directory = Path(config.work_dir) / "export"
    marker = directory / EXPORT_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("model") == config.model and all((directory / n).is_file() for n in (FP32_FILE, INT8_FILE)):
            progress(f"reusing the export in {directory}")
            return load(directory, info)
    export = export_encoder(EncoderExportConfig(model=config.model, output_dir=directory), progress=progress)
    marker.write_text(json.dumps(export.to_manifest(), indent=2))
    return export


def triton_model_name(path: str) -> str:
    precision, batching = TRITON_PATHS[path]
    return f"text_encoder_{precision}" + ("" if batching else "_nobatch")


def write_triton_repository(root: Path, export, paths: list[str]) -> dict[str, str]:
    """`root/model_repository` with one model per Triton path; returns each path's config.pbtxt.

    Each model's version 1 is the lmrec `text_encoder` version exactly as a build writes it
    (`write_encoder_version`: adapter, ONNX file, tokenizer, encoder.json), renamed to a model of its own
    so one Triton serves every variant. Dynamic batching on: the config generated from `TextEncoderSpec`
    (only the name changed). Off: the same config with its `dynamic_batching` block removed, so Triton
    executes each request on its own.
    """
    from lmrec.export.repository import REPOSITORY_DIR, write_encoder_version
    from lmrec.export.triton_config import TextEncoderSpec, render_config, text_encoder_config

    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    repository = root / REPOSITORY_DIR
    repository.mkdir(parents=True)
    configs = {}
    for path in paths:
        precision, batching = TRITON_PATHS[path]
        staging = root / "staging" / path
        base = TextEncoderSpec()
        write_encoder_version(staging, base, export, precision=precision, version=1)
        name = triton_model_name(path)
        os.replace(staging / REPOSITORY_DIR / base.name, repository / name)
        model_config = text_encoder_config(TextEncoderSpec(name=name))
        if not batching:
            model_config.ClearField("dynamic_batching")
        configs[path] = render_config(model_config)
        (repository / name / "config.pbtxt").write_text(configs[path])
    shutil.rmtree(root / "staging", ignore_errors=True)
    return configs


# --- the paths ---------------------------------------------------------------------------------------------


@dataclass
class CellResult:
    latencies_s: list[float]
    chunk_index: list[int]
    wall_s: float


def _budget_done(start: float, done: int, config: EncoderBenchConfig) -> bool:
    elapsed = time.perf_counter() - start
    return elapsed >= config.max_seconds or (elapsed >= config.min_seconds and done >= config.min_requests)


class InProcessPath:
    """A library called in this process, one caller at a time (concurrency 1)."""

    served = False

    def __init__(self, name: str, encode) -> None:
        self.name, self._encode = name, encode

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        self._encode(chunks[0].texts)  # warm-up
        latencies, which = [], []
        start = time.perf_counter()
        k = 0
        while not _budget_done(start, len(latencies), config):
            index = k % len(chunks)
            t0 = time.perf_counter()
            vectors = self._encode(chunks[index].texts)
            latencies.append(time.perf_counter() - t0)
            which.append(index)
            k += 1
        if len(vectors) != len(chunks[which[-1]].texts):
            raise RuntimeError(f"{self.name} returned {len(vectors)} vectors for {len(chunks[which[-1]].texts)} texts")
        return CellResult(latencies, which, time.perf_counter() - start)

    def close(self) -> None:
        pass


async def closed_loop(send, n_chunks: int, concurrency: int, config: EncoderBenchConfig) -> CellResult:
    """`concurrency` workers, each sending its next request as soon as the last one returned."""
    latencies: list[float] = []
    which: list[int] = []
    counter = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal counter
        while not _budget_done(start, len(latencies), config):
            index = counter % n_chunks
            counter += 1
            t0 = time.perf_counter()
            await send(index)
            latencies.append(time.perf_counter() - t0)
            which.append(index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return CellResult(latencies, which, time.perf_counter() - start)


class TritonPath:
    """The lmrec text_encoder in Triton over gRPC (`tritonclient.grpc.aio`), N requests in flight."""

    served = True

    def __init__(self, name: str, url: str, model: str) -> None:
        self.name, self.url, self.model = name, url, model

    async def _run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        inputs = []
        for chunk in chunks:
            data = np.array([[t.encode("utf-8")] for t in chunk.texts], dtype=object)
            tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)

        async def send(index: int) -> None:
            result = await client.infer(self.model, [inputs[index]], client_timeout=120.0)
            vectors = result.as_numpy("EMBEDDING")
            if vectors is None or len(vectors) != len(chunks[index].texts):
                raise RuntimeError(f"{self.name}: wrong answer shape {None if vectors is None else vectors.shape}")

        try:
            await send(0)  # warm-up: the channel and the model
            return await closed_loop(send, len(chunks), concurrency, config)
        finally:
            await client.close()

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        return asyncio.run(self._run(chunks, concurrency, config))

    def close(self) -> None:
        pass


class InfinityPath:
    """infinity-emb over HTTP (OpenAI-style POST /embeddings, aiohttp), N requests in flight."""

    served = True

    def __init__(self, server) -> None:
        self.name, self.server = INFINITY_PATH, server

    async def _run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        import aiohttp

        bodies = [self.server.request_body(chunk.texts) for chunk in chunks]
        connector = aiohttp.TCPConnector(limit=max(concurrency, 1) * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def send(index: int) -> None:
                raw = await self.server.post(session, bodies[index])
                self.server.parse_response(raw, len(chunks[index].texts))

            await send(0)  # warm-up: the connection and the model
            return await closed_loop(send, len(chunks), concurrency, config)

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        return asyncio.run(self._run(chunks, concurrency, config))

    def close(self) -> None:
        self.server.stop()


def sentence_transformers_path(model: str) -> InProcessPath:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    st = SentenceTransformer(model, device="cpu")

    def encode(texts: list[str]):
        with torch.inference_mode():
            return st.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)

    return InProcessPath(BASELINE_PATH, encode)


def onnx_path(name: str, export) -> InProcessPath:
    from lmrec.encoder import OnnxTextEncoder

    onnx_file = export.fp32_file if ONNX_PATHS[name] == "fp32" else export.int8_file
    encoder = OnnxTextEncoder(export.directory, onnx_file=onnx_file, threads=os.cpu_count() or 1)
    return InProcessPath(name, lambda texts: encoder.encode(texts, batch_size=max(1, len(texts))))


# --- the run -----------------------------------------------------------------------------------------------


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


def _load_texts(config: EncoderBenchConfig) -> tuple[list[str], list[str], str]:
    from lmrec.export.loaders import DataConfig, load_dataset

    if config.synthetic is not None:
        data, label = DataConfig(dataset="synthetic", synthetic=config.synthetic), "synthetic"
    else:
        folder = Path(config.data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: the encoder suite reads {config.dataset} from ../shared/data")
        data, label = DataConfig(dataset=config.dataset, data_dir=folder), config.dataset
    texts, kinds = benchmark_texts(load_dataset(data).dataset, config.n_texts, config.seed)
    return texts, kinds, label


def _summarise(result: CellResult, chunks: list[Chunk]) -> dict:
    latencies_ms = np.asarray(result.latencies_s) * 1000.0
    sentences = sum(len(chunks[i].texts) for i in result.chunk_index)
    flops = sum(chunks[i].flops_padded for i in result.chunk_index)
    real = sum(chunks[i].flops_real for i in result.chunk_index)
    p50, p95, p99 = (float(v) for v in np.percentile(latencies_ms, [50, 95, 99]))
    return {"sentences_per_s": sentences / result.wall_s, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            # Useful work only: paths pad differently (length buckets, sorting), and padded FLOPs that a
            # path never executes would let it claim more than the machine's peak.
            "gflop_per_s": real / result.wall_s / 1e9, "padded_gflop_per_s": flops / result.wall_s / 1e9,
            "requests": len(result.latencies_s), "sentences": sentences, "seconds": result.wall_s}


def _median_record(path: str, batch: int, concurrency: int, rounds: list[dict]) -> dict:
    med = lambda key: float(statistics.median(r[key] for r in rounds))  # noqa: E731
    return {"path": path, "batch": batch, "concurrency": concurrency,
            "sentences_per_s": med("sentences_per_s"),
            "latency_ms": {"p50": med("p50_ms"), "p95": med("p95_ms"), "p99": med("p99_ms")},
            "gflop_per_s": med("gflop_per_s"), "padded_gflop_per_s": med("padded_gflop_per_s"),
            "requests": int(sum(r["requests"] for r in rounds)), "rounds": rounds}


def run_encoder_bench(config: EncoderBenchConfig, *, progress=print) -> dict:
    from lmrec.encoder import EncoderSettings

    started = time.perf_counter()
    paths = expand_paths(config.paths)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"suite": "encoder",
                 "command": "lmrec " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "lmrec" else None,
                 "machine": machine_facts(),
                 "config": {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                            for k, v in asdict(config).items()} | {"paths": list(paths)},
                 "records": [], "errors": []}
    if config.synthetic is not None:
        out["config"].update(dataset="synthetic", data_dir=None)
    out["notes"] = [
        "Texts per request = batch; served paths: closed loop with `concurrency` requests in flight from one "
        "asyncio client in this process; in-process paths: one caller.",
        "Achieved GFLOP/s count useful work: each text's own FLOPs, without padding (paths pad differently: "
        "lmrec and sentence-transformers sort by length, lmrec splits batches into similar-length runs); "
        "`padded_gflop_per_s` in the JSON counts each request padded to its longest text.",
        "triton-*: the lmrec text_encoder python model (tokenisation inside Triton) with the generated "
        "config.pbtxt; *-nobatch: the same config without its dynamic_batching block.",
        "infinity-emb: torch engine on the CPU, --batch-size = max(64, largest batch), vector disk cache off, "
        "base64 answers; the same model folder as sentence-transformers.",
    ]

    texts, kinds, label = _load_texts(config)
    export = prepare_export(config, progress=progress)
    settings = EncoderSettings.read(export.directory)
    shape = EncoderShape.of_model(config.model)
    lengths = token_lengths(export.directory / "tokenizer.json", settings.max_length, texts)
    per_text = flops_per_sequence(lengths, shape)
    kinds_arr = np.asarray(kinds)
    out["texts"] = {
        "dataset": label, "n_texts": len(texts), "n_items": int((kinds_arr == "item").sum()),
        "n_profiles": int((kinds_arr == "profile").sum()), "max_length": settings.max_length,
        "tokens": {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
                   "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()), "min": int(lengths.min())},
        "tokens_by_kind": {k: float(lengths[kinds_arr == k].mean()) for k in ("item", "profile") if (kinds_arr == k).any()},
    }
    chunks = {b: make_chunks(texts, lengths, b, shape) for b in config.batch_sizes}
    out["arithmetic"] = {
        "model": config.model, "shape": asdict(shape),
        "formula": "L * (2*n*(4*h^2 + 2*h*i) + 2*2*n^2*h) FLOPs per sequence of n tokens",
        "flops_per_sentence": float(per_text.mean()),
        "flops_per_sentence_padded": {str(b): float(sum(c.flops_padded for c in cs) / sum(len(c.texts) for c in cs))
                                      for b, cs in chunks.items()},
    }
    progress(f"{len(texts)} texts from {label}: {lengths.mean():.1f} tokens mean (max {lengths.max()}), "
             f"{per_text.mean() / 1e6:.0f} MFLOP per sentence")

    progress(f"GEMM peaks ({config.gemm_size}³) ...")
    peak_runs = [measure_peaks(config.gemm_size, config.gemm_repeats)]
    out["peaks"] = merge_peaks(peak_runs)
    progress(f"  fp32 {out['peaks']['fp32_gflops']:.1f} GFLOP/s, int8 {out['peaks']['int8_gops']:.1f} GOP/s")

    runners: dict[str, object] = {}
    triton = None
    try:
        for path in paths:
            try:
                if path == BASELINE_PATH:
                    runners[path] = sentence_transformers_path(config.model)
                elif path in ONNX_PATHS:
                    runners[path] = onnx_path(path, export)
            except Exception as error:  # noqa: BLE001 - record and go on with the other paths
                out["errors"].append({"path": path, "error": f"{type(error).__name__}: {error}"})
        triton_paths = [p for p in paths if p in TRITON_PATHS]
        if triton_paths:
            from lmrec.server.triton_launcher import TritonConfig, TritonProcess

            repository = work / "triton" / "model_repository"
            progress(f"starting Triton with {', '.join(triton_model_name(p) for p in triton_paths)} ...")
            try:
                out["triton_configs"] = write_triton_repository(work / "triton", export, triton_paths)
                triton = TritonProcess(TritonConfig(repository=repository,
                                                    models=tuple(triton_model_name(p) for p in triton_paths),
                                                    startup_timeout_s=config.triton_startup_timeout_s)).start()
                for p in triton_paths:
                    runners[p] = TritonPath(p, triton.grpc_url, triton_model_name(p))
            except Exception as error:  # noqa: BLE001
                for p in triton_paths:
                    out["errors"].append({"path": p, "error": f"{type(error).__name__}: {error}"})
        if INFINITY_PATH in paths:
            from .peers.infinity import SETUP_HINT, InfinityServer, installed_version, is_installed

            if not is_installed(config.infinity_venv):
                out["errors"].append({"path": INFINITY_PATH, "error": SETUP_HINT})
                progress(f"{INFINITY_PATH}: {SETUP_HINT}")
            else:
                progress("starting infinity-emb ...")
                try:
                    server = InfinityServer(config.model, venv=config.infinity_venv,
                                            batch_size=max(64, *config.batch_sizes), log_dir=work / "infinity").start()
                    runners[INFINITY_PATH] = InfinityPath(server)
                    out["infinity_version"] = installed_version(config.infinity_venv)
                except Exception as error:  # noqa: BLE001
                    out["errors"].append({"path": INFINITY_PATH, "error": f"{type(error).__name__}: {error}"})

        order = [p for p in paths if p in runners]
        per_cell: dict[tuple[str, int, int], list[dict]] = {}
        for round_index in range(config.rounds):
            shift = round_index % max(1, len(order))
            for path in order[shift:] + order[:shift]:
                runner = runners[path]
                for batch in config.batch_sizes:
                    for concurrency in (config.concurrency if runner.served else (1,)):
                        try:
                            result = _summarise(runner.run(chunks[batch], concurrency, config), chunks[batch])
                        except Exception as error:  # noqa: BLE001
                            out["errors"].append({"path": path, "batch": batch, "concurrency": concurrency,
                                                  "round": round_index + 1, "error": f"{type(error).__name__}: {error}"})
                            progress(f"  {path} b={batch} c={concurrency}: FAILED {error}")
                            continue
                        per_cell.setdefault((path, batch, concurrency), []).append(result)
                        progress(f"[round {round_index + 1}/{config.rounds}] {path:<21} b={batch:<3} c={concurrency:<2} "
                                 f"{result['sentences_per_s']:8.1f} sent/s  p50 {result['p50_ms']:7.1f} ms  "
                                 f"p99 {result['p99_ms']:7.1f} ms  {result['gflop_per_s']:6.1f} GFLOP/s")
                # Partial results after every path: a long run that stops still leaves its numbers.
                out["records"] = [_median_record(p, b, c, r) for (p, b, c), r in per_cell.items()]
                out["seconds"] = round(time.perf_counter() - started, 1)
                _finish(out)
                write_results(out, config.out_dir, config.name)
            out["rounds_done"] = round_index + 1
    finally:
        for runner in runners.values():
            try:
                runner.close()
            except Exception:  # noqa: BLE001
                pass
        if triton is not None:
            triton.stop()

    progress("GEMM peaks again ...")
    peak_runs.append(measure_peaks(config.gemm_size, config.gemm_repeats))
    out["peaks"] = merge_peaks(peak_runs)
    out["seconds"] = round(time.perf_counter() - started, 1)
    _finish(out)
    write_results(out, config.out_dir, config.name)
    return out


# --- ratios, efficiency, bars ----------------------------------------------------------------------------


def _cells(records: list[dict]) -> dict[tuple[str, int, int], dict]:
    return {(r["path"], r["batch"], r["concurrency"]): r for r in records}


def best_over_concurrency(records: list[dict], path: str, batch: int) -> dict | None:
    matching = [r for r in records if r["path"] == path and r["batch"] == batch]
    return max(matching, key=lambda r: r["sentences_per_s"]) if matching else None


def compute_ratios(records: list[dict]) -> dict:
    cells = _cells(records)
    batches = sorted({r["batch"] for r in records})
    vs_st, vs_inf, speedups = [], [], []
    for b in batches:
        st = cells.get((BASELINE_PATH, b, 1))
        triton = best_over_concurrency(records, "triton-int8", b)
        if st and triton:
            vs_st.append({"batch": b, "triton_concurrency": triton["concurrency"],
                          "triton_int8": triton["sentences_per_s"], "sentence_transformers": st["sentences_per_s"],
                          "ratio": triton["sentences_per_s"] / st["sentences_per_s"]})
        for r in records:
            if r["path"] == "triton-int8" and r["batch"] == b:
                peer = cells.get((INFINITY_PATH, b, r["concurrency"]))
                if peer:
                    vs_inf.append({"batch": b, "concurrency": r["concurrency"], "triton_int8": r["sentences_per_s"],
                                   "infinity_emb": peer["sentences_per_s"],
                                   "ratio": r["sentences_per_s"] / peer["sentences_per_s"]})
        if st:
            for path in ALL_PATHS:
                best = best_over_concurrency(records, path, b)
                if best and path != BASELINE_PATH:
                    speedups.append({"path": path, "batch": b, "concurrency": best["concurrency"],
                                     "ratio": best["sentences_per_s"] / st["sentences_per_s"]})
    return {"triton_int8_vs_sentence_transformers": vs_st, "triton_int8_vs_infinity_emb": vs_inf,
            "best_vs_sentence_transformers": speedups}


def compute_efficiency(records: list[dict], peaks: dict | None) -> dict:
    """Best achieved GFLOP/s (useful, unpadded FLOPs) per path, and against the measured GEMM peaks."""
    out: dict = {"per_path": {}}
    for path in ALL_PATHS:
        matching = [r for r in records if r["path"] == path]
        if matching:
            best = max(matching, key=lambda r: r["gflop_per_s"])
            out["per_path"][path] = {"gflop_per_s": best["gflop_per_s"], "batch": best["batch"],
                                     "concurrency": best["concurrency"]}
    if peaks:
        for kind, paths, peak in (("int8", INT8_PATHS, peaks.get("int8_gops")), ("fp32", FP32_PATHS, peaks.get("fp32_gflops"))):
            for path in paths:
                if path in out["per_path"] and peak:
                    out["per_path"][path][f"share_of_{kind}_peak"] = out["per_path"][path]["gflop_per_s"] / peak
            measured = [p for p in paths if p in out["per_path"]]
            if measured and peak:
                best = max(measured, key=lambda p: out["per_path"][p]["gflop_per_s"])
                out[kind] = {"path": best, "gflop_per_s": out["per_path"][best]["gflop_per_s"], "peak": peak,
                             "share": out["per_path"][best]["gflop_per_s"] / peak}
    return out


def bar_checks(payload: dict) -> list[dict]:
    records = payload.get("records", [])
    if not records:
        return []
    checks = []
    batches = sorted({r["batch"] for r in records})
    bar_batch = 32 if 32 in batches else max(batches)
    ratios = payload.get("ratios") or compute_ratios(records)
    st = next((r for r in ratios["triton_int8_vs_sentence_transformers"] if r["batch"] == bar_batch), None)
    if st:
        checks.append({"bar": f"served int8 Triton ≥ 4× sentence-transformers (batch {bar_batch})",
                       "value": st["ratio"], "needed": 4.0})
    triton = best_over_concurrency(records, "triton-int8", bar_batch)
    peer = best_over_concurrency(records, INFINITY_PATH, bar_batch)
    if triton and peer:
        checks.append({"bar": f"served int8 Triton ≥ 1.5× infinity-emb (batch {bar_batch}, each at its best concurrency: "
                              f"{triton['concurrency']} vs {peer['concurrency']})",
                       "value": triton["sentences_per_s"] / peer["sentences_per_s"], "needed": 1.5})
    efficiency = payload.get("efficiency") or {}
    if "int8" in efficiency:
        e = efficiency["int8"]
        checks.append({"bar": f"int8 encoder ({e['path']}) ≥ 40% of the int8 GEMM peak", "value": e["share"],
                       "needed": 0.4})
    for check in checks:
        check["met"] = bool(check["value"] >= check["needed"])
    return checks


def _finish(payload: dict) -> None:
    payload["ratios"] = compute_ratios(payload["records"])
    payload["efficiency"] = compute_efficiency(payload["records"], payload.get("peaks"))
    payload["bars"] = bar_checks(payload)


# --- output ------------------------------------------------------------------------------------------------


def write_results(payload: dict, out_dir: Path, name: str) -> list[Path]:
    payload = dict(payload)
    payload.setdefault("machine", machine_facts())
    if "bars" not in payload:
        payload["ratios"] = compute_ratios(payload.get("records", []))
        payload["efficiency"] = compute_efficiency(payload.get("records", []), payload.get("peaks"))
        payload["bars"] = bar_checks(payload)
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=lambda png: throughput_chart(payload.get("records", []), png))


def throughput_chart(records: list[dict], path: Path) -> Path:
    """Sentences/s against batch size, one line per path (served paths at their best concurrency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7.5, 4.5))
    batches = sorted({r["batch"] for r in records})
    for name in ALL_PATHS:
        points = [(b, best_over_concurrency(records, name, b)) for b in batches]
        points = [(b, r["sentences_per_s"]) for b, r in points if r]
        if not points:
            continue
        style = "-" if name.startswith("triton") else "--" if name.startswith("onnx") else ":"
        axis.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=name,
                  linewidth=2.4 if name == "triton-int8" else 1.4)
    axis.set_xscale("log", base=2)
    axis.set_xticks(batches or [1], [str(b) for b in batches] or ["1"])
    axis.set_xlabel("texts per request (batch)")
    axis.set_ylabel("sentences / s (served: best concurrency)")
    axis.set_title("Encoder throughput: all-MiniLM-L6-v2 on the CPU", fontsize=10)
    axis.grid(alpha=0.3)
    if records:
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_markdown(payload: dict) -> str:
    machine = payload.get("machine", {})
    texts = payload.get("texts", {})
    lines = ["# Encoder suite", "",
             f"Command: `{payload.get('command') or 'lmrec bench encoder'}` (reproduce: `lmrec bench encoder`)  ",
             f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, "
             f"{' '.join(machine.get('simd_flags', []))}  ",
             f"Rounds: {payload.get('rounds_done', 0)} of {payload.get('config', {}).get('rounds', '?')} "
             "(paths take turns; each cell is the median over rounds)  "]
    if texts:
        lines.append(f"Texts: {texts['n_texts']} from {texts['dataset']} ({texts['n_items']} item texts, "
                     f"{texts['n_profiles']} user profiles); tokens mean {texts['tokens']['mean']:.1f}, "
                     f"p95 {texts['tokens']['p95']:.0f}, max {texts['tokens']['max']}  ")
    arithmetic = payload.get("arithmetic")
    if arithmetic:
        lines.append(f"Arithmetic: {arithmetic['formula']}; {arithmetic['flops_per_sentence'] / 1e6:.0f} MFLOP per "
                     "sentence unpadded; achieved GFLOP/s count useful (unpadded) FLOPs  ")
    peaks = payload.get("peaks")
    if peaks:
        lines.append(f"GEMM peaks ({peaks['size']}³, best of the run): fp32 {peaks['fp32_gflops']:.1f} GFLOP/s, "
                     f"int8 {peaks['int8_gops']:.1f} GOP/s  ")
    lines.append("")
    records = payload.get("records", [])
    for path in ALL_PATHS:
        rows = [r for r in records if r["path"] == path]
        if not rows:
            continue
        lines += [f"## {path}", ""]
        lines += markdown_table(
            ["batch", "concurrency", "sentences/s", "p50 ms", "p95 ms", "p99 ms", "GFLOP/s", "requests"],
            [[r["batch"], r["concurrency"], f"{r['sentences_per_s']:.1f}", f"{r['latency_ms']['p50']:.1f}",
              f"{r['latency_ms']['p95']:.1f}", f"{r['latency_ms']['p99']:.1f}", f"{r['gflop_per_s']:.1f}",
              r["requests"]] for r in sorted(rows, key=lambda r: (r["batch"], r["concurrency"]))]) + [""]
    ratios = payload.get("ratios") or {}
    if ratios.get("triton_int8_vs_sentence_transformers"):
        lines += ["## triton-int8 (best concurrency) vs sentence-transformers", ""]
        lines += markdown_table(["batch", "triton concurrency", "triton-int8 sent/s", "sentence-transformers sent/s", "ratio"],
                                [[r["batch"], r["triton_concurrency"], f"{r['triton_int8']:.1f}",
                                  f"{r['sentence_transformers']:.1f}", f"{r['ratio']:.2f}×"]
                                 for r in ratios["triton_int8_vs_sentence_transformers"]]) + [""]
    if ratios.get("triton_int8_vs_infinity_emb"):
        lines += ["## triton-int8 vs infinity-emb (same batch, same concurrency)", ""]
        lines += markdown_table(["batch", "concurrency", "triton-int8 sent/s", "infinity-emb sent/s", "ratio"],
                                [[r["batch"], r["concurrency"], f"{r['triton_int8']:.1f}", f"{r['infinity_emb']:.1f}",
                                  f"{r['ratio']:.2f}×"] for r in ratios["triton_int8_vs_infinity_emb"]]) + [""]
    efficiency = (payload.get("efficiency") or {}).get("per_path")
    if efficiency:
        lines += ["## Arithmetic rate (best cell per path)", ""]
        lines += markdown_table(["path", "GFLOP/s", "batch", "concurrency", "share of int8 peak", "share of fp32 peak"],
                                [[p, f"{e['gflop_per_s']:.1f}", e["batch"], e["concurrency"],
                                  f"{e['share_of_int8_peak']:.0%}" if "share_of_int8_peak" in e else "–",
                                  f"{e['share_of_fp32_peak']:.0%}" if "share_of_fp32_peak" in e else "–"]
                                 for p, e in efficiency.items()]) + [""]
    if payload.get("bars"):
        lines += ["## Bars", ""]
        lines += markdown_table(["bar", "measured", "needed", "met"],
                                [[b["bar"], f"{b['value']:.3f}", f"{b['needed']:.2f}", "yes" if b["met"] else "NO"]
                                 for b in payload["bars"]]) + [""]
    if payload.get("errors"):
        lines += ["## Paths not measured", ""]
        for error in payload["errors"]:
            where = "".join(f" {k}={error[k]}" for k in ("batch", "concurrency", "round") if k in error)
            lines.append(f"- {error['path']}{where}: {error['error'].splitlines()[0][:300]}")
        lines.append("")
    for note in payload.get("notes", []):
        lines.append(f"Note: {note}  ")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_arguments(parser) -> None:
    parser.add_argument("--paths", default="all",
                        help=f"comma list of {', '.join(ALL_PATHS)} or groups {', '.join(PATH_ALIASES)} (default: all)")
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="texts per request")
    parser.add_argument("--concurrency", default="1,2,4,8", help="requests in flight (served paths)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds; each cell reports the median")
    parser.add_argument("--n-texts", type=int, default=512, help="texts sampled (half items, half user profiles)")
    parser.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-latest-small"))
    parser.add_argument("--data-dir", help="the data set folder (default: ../shared/data/<dataset>)")
    parser.add_argument("--synthetic-users", type=int, default=0,
                        help="smoke run: a synthetic data set of N users instead of MovieLens")
    parser.add_argument("--model", help="sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--work-dir", default="benchmarks/results/tmp/encoder",
                        help="export cache, Triton model repository, server logs")
    parser.add_argument("--export-dir", help="use this fp32 + int8 export instead of exporting")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per cell")
    parser.add_argument("--min-requests", type=int, default=8, help="per cell")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="per cell (in-flight requests still finish)")
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--infinity-venv", help="infinity-emb's venv (default: .venv-infinity at the repo root)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="encoder", help="result file stem")


def config_from_args(args) -> EncoderBenchConfig:
    from lmrec.cli import CliError

    try:
        paths = expand_paths(p for p in args.paths.split(",") if p)
        batch_sizes, concurrency = _ints(args.batch_sizes), _ints(args.concurrency)
    except ValueError as error:
        raise CliError(str(error)) from None
    if not batch_sizes or min(batch_sizes) < 1 or not concurrency or min(concurrency) < 1:
        raise CliError("--batch-sizes and --concurrency need positive integers")
    if max(batch_sizes) > 64 and any(p in TRITON_PATHS for p in paths):
        raise CliError("--batch-sizes: the served text_encoder takes at most 64 texts per request (max_batch_size)")
    if args.rounds < 1:
        raise CliError("--rounds must be >= 1")
    extra: dict = {}
    if args.synthetic_users:
        from lmrec.export.loaders import SyntheticConfig

        n = args.synthetic_users
        extra["synthetic"] = SyntheticConfig(n_users=n, n_items=max(30, n), min_interactions=3, max_interactions=10)
    if args.data_dir:
        extra["data_dir"] = Path(args.data_dir)
    elif args.dataset != "ml-100k":
        extra["data_dir"] = REPO_ROOT.parent / "shared" / "data" / args.dataset
    if args.model:
        extra["model"] = args.model
    if args.export_dir:
        extra["export_dir"] = Path(args.export_dir)
    if args.infinity_venv:
        extra["infinity_venv"] = Path(args.infinity_venv)
    return EncoderBenchConfig(paths=paths, batch_sizes=batch_sizes, concurrency=concurrency, rounds=args.rounds,
                              n_texts=args.n_texts, dataset=args.dataset, work_dir=Path(args.work_dir),
                              out_dir=Path(args.out), name=args.name, seed=args.seed, min_seconds=args.min_seconds,
                              min_requests=args.min_requests, max_seconds=args.max_seconds, gemm_size=args.gemm_size,
                              **extra)
