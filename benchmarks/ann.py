"""ANN suite: hnswlib (the serving index, cosine space) against exact brute-force search.

`lmrec bench ann` → benchmarks/results/ann.{json,md,png}. For each catalogue size it builds one
hnswlib index (build time, saved index size, RSS growth) and then measures, interleaved and repeated
(median over repeats), exact search and hnswlib at every `ef`:

* `batched`: all queries in one call with every core (hnswlib `num_threads`, numpy BLAS threads);
  QPS = queries / wall time.
* `batch1`:  one query per call on one thread; per-query latency p50/p99 and QPS = 1 / mean latency.

recall@10 = |hnsw top-10 ∩ exact top-10| / 10, averaged over the queries. Item vectors are the real
item embeddings (`--embeddings`, or the ml-100k item texts encoded by the packaged all-MiniLM-L6-v2);
larger catalogues add synthetic vectors drawn around the real ones (a random point between two real
vectors plus Gaussian noise along their top 48 principal directions, 0.5× the real std along each,
re-normalised), so the catalogue spreads over the region real items occupy. Queries are fresh perturbed
real vectors, never in the index. Each catalogue's local intrinsic dimension is reported beside the real
vectors' own, so a reader can see whether the synthetic catalogue is as hard as real ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmrec.cli import invoked_command
from lmrec.cli_client import CliError
from lmrec.cli_types import positive_int, seed_value

from .cli_checks import check_results_file
from .machine import machine_facts
from .report import markdown_table, write_report

K = 10
RECALL_TARGET = 0.98
SPEEDUP_NEEDED = 50.0
MODES = ("batched", "batch1")
NOISE_SCALE = 0.5  # synthetic / query noise per dimension, in units of the real embeddings' std
NOISE_RANK = 48  # `principal` noise: how many of the real vectors' principal directions it moves along
CHUNK = 100_000  # rows generated per random stream (catalogues nest: the 10k one is the 100k one's prefix)
SCORE_BYTES = 256 << 20  # cap on one exact-search score matrix (queries × items × 4 bytes)


@dataclass(frozen=True, kw_only=True)
class AnnConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    efs: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 400, 480, 640)
    n_queries: int = 1000
    m: int = 32  # what the gateway's own item indexes use (export/index_build.py)
    ef_construction: int = 200
    seed: int = 42
    dataset: str = "ml-100k"  # whose item texts give the real vectors: ml-100k or ml-latest-small
    data_dir: Path | None = None  # that data set's folder; None: ../shared/data/<dataset>
    embeddings: Path | None = None  # .npy of item embeddings (or a bundle folder holding item_embeddings.npy)
    out_dir: Path = Path("benchmarks/results")
    name: str = "ann"
    repeats: int = 3
    threads: int | None = None  # batched search and build; None: every core this process may use
    noise: str = "principal"  # of the synthetic vectors and queries: see noise_sampler
    noise_rank: int = NOISE_RANK  # principal directions the `principal` noise uses
    latency_budget_s: float = 5.0  # batch1: stop after this long per measurement (at least MIN_LATENCY_QUERIES)
    min_batch_seconds: float = 0.2  # batched: repeat the call until this much wall time has passed


MIN_LATENCY_QUERIES = 20
MOVIELENS = ("ml-100k", "ml-latest-small")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------- data


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


def load_real_embeddings(config: AnnConfig, *, progress=print) -> tuple[np.ndarray, str]:
    """(n_real, dim) unit vectors and a line saying where they came from."""
    if config.embeddings is not None:
        path = Path(config.embeddings)
        if path.is_dir():
            path = path / "item_embeddings.npy"
        try:
            loaded = np.load(path)
        except (OSError, ValueError, TypeError, EOFError) as error:  # a missing or empty file, a pickle, JSON, text ...
            raise ValueError(f"{path}: not a .npy array of item embeddings ({error})") from None
        if not isinstance(loaded, np.ndarray):  # an .npz archive (a bundle's cf.npz, say) holds several
            raise ValueError(f"{path}: an .npz archive, not a .npy array of item embeddings "
                             "(a bundle's is item_embeddings.npy)")
        vectors = loaded.astype(np.float32)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"{path}: expected a 2-d array of item embeddings, got shape {vectors.shape}")
        return _normalise(vectors), f"{path} ({len(vectors)} × {vectors.shape[1]})"
    from lmrec.export.encoder_export import default_model_path
    from lmrec.export.loaders import DataConfig, load_dataset
    from lmrec.text import item_text_of

    if config.dataset not in MOVIELENS:
        raise ValueError(f"dataset must be one of {', '.join(MOVIELENS)}, got {config.dataset!r}")
    folder = Path(config.data_dir) if config.data_dir is not None else SHARED_DATA / config.dataset
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: pass --embeddings PATH.npy or --data-dir ({config.dataset})")
    dataset = load_dataset(DataConfig(dataset=config.dataset, data_dir=folder)).dataset
    texts = [item_text_of(info) for info in dataset.items]
    progress(f"encoding {len(texts)} {config.dataset} item texts with all-MiniLM-L6-v2 (CPU) ...")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(default_model_path(), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return _normalise(np.asarray(vectors, np.float32)), \
        f"{config.dataset} item texts ({len(texts)}) encoded by all-MiniLM-L6-v2 ({folder})"


NOISES = ("isotropic", "covariance", "principal")


def noise_sampler(real: np.ndarray, kind: str, rank: int = NOISE_RANK, scale: float = NOISE_SCALE):
    """n × dim Gaussian noise, `scale` × the real vectors' spread.

    `isotropic`: dimensions independent, each with `scale` × the real per-dimension std.
    `covariance`: correlated like the real embeddings (drawn from `scale`² × their covariance).
    `principal`: along the real vectors' top `rank` principal directions only (at most their dimension
    and count), each with `scale` × the real std along it. Full-rank noise makes a dense catalogue
    locally as high-dimensional as the noise (local intrinsic dimension 43 at 1M items against 24 for
    real item texts, see `local_intrinsic_dimension`); noise in a few dozen directions keeps a 1M
    catalogue's neighbourhoods as complex as real ones.
    """
    if kind == "isotropic":
        per_dimension = (scale * real.std(axis=0)).astype(np.float32)
        return lambda n, rng: rng.standard_normal((n, real.shape[1]), dtype=np.float32) * per_dimension
    if kind == "covariance":
        covariance = np.cov(real.T.astype(np.float64)) + 1e-9 * np.eye(real.shape[1])
        factor = (scale * np.linalg.cholesky(covariance)).astype(np.float32)
        return lambda n, rng: rng.standard_normal((n, real.shape[1]), dtype=np.float32) @ factor.T
    if kind == "principal":
        if rank < 1:
            raise ValueError(f"noise rank must be at least 1, got {rank}")
        rank = min(rank, *real.shape)  # no more directions than the real vectors span
        centred = real.astype(np.float64) - real.mean(axis=0)
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        spread = singular[:rank] / np.sqrt(max(len(real) - 1, 1))  # std along each direction
        factor = (scale * spread[:, None] * directions[:rank]).astype(np.float32)
        return lambda n, rng: rng.standard_normal((n, rank), dtype=np.float32) @ factor
    raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {kind!r}")


def _perturbed(real: np.ndarray, noise, n: int, rng: np.random.Generator) -> np.ndarray:
    # A random point between two real items, plus noise: the catalogue fills the space between real
    # items instead of piling hundreds of near-copies around each one (where the exact top 10 is a
    # near-tie that no index, and no user, could tell apart).
    first, second = rng.integers(0, len(real), n), rng.integers(0, len(real), n)
    weight = rng.random((n, 1), dtype=np.float32)
    return _normalise(weight * real[first] + (1.0 - weight) * real[second] + noise(n, rng))


def make_catalogue(real: np.ndarray, size: int, seed: int, noise: str = "principal",
                   rank: int = NOISE_RANK, scale: float = NOISE_SCALE) -> np.ndarray:
    """`size` unit vectors: the real ones (a random subset when fewer are asked for), then synthetic ones."""
    if size <= len(real):
        order = np.random.default_rng([seed, 0]).permutation(len(real))[:size]
        return np.ascontiguousarray(real[order])
    sample = noise_sampler(real, noise, rank, scale)
    out = np.empty((size, real.shape[1]), np.float32)
    out[: len(real)] = real
    # Chunk c covers rows [c*CHUNK, (c+1)*CHUNK) of the synthetic part, from its own random stream.
    n_synthetic = size - len(real)
    for c, start in enumerate(range(0, n_synthetic, CHUNK)):
        n = min(CHUNK, n_synthetic - start)
        rng = np.random.default_rng([seed, 1, c])
        out[len(real) + start : len(real) + start + n] = _perturbed(real, sample, n, rng)
    return out


def make_queries(real: np.ndarray, n: int, seed: int, noise: str = "principal", rank: int = NOISE_RANK,
                 scale: float = NOISE_SCALE) -> np.ndarray:
    return _perturbed(real, noise_sampler(real, noise, rank, scale), n, np.random.default_rng([seed, 2]))


LID_NEIGHBOURS = 20


def local_intrinsic_dimension(items: np.ndarray, queries: np.ndarray, neighbours: np.ndarray) -> float:
    """Median maximum-likelihood local intrinsic dimension (Levina & Bickel) around the queries.

    `neighbours`: each query's exact nearest items, best first. It measures how hard the catalogue is for a
    graph index: how fast the number of items within a radius grows with the radius near a query.
    """
    sims = np.einsum("qd,qkd->qk", queries, items[neighbours])
    distances = np.sqrt(np.maximum(2.0 - 2.0 * sims, 1e-12))  # unit vectors: Euclidean from cosine
    ratios = np.log(distances[:, :-1] / distances[:, -1:])
    return float(np.median(-1.0 / np.minimum(ratios.mean(axis=1), -1e-12)))


def real_intrinsic_dimension(real: np.ndarray, seed: int) -> float | None:
    """The real vectors' own local intrinsic dimension: a fifth of them as queries against the rest."""
    n_queries = len(real) // 5
    if len(real) - n_queries <= LID_NEIGHBOURS:
        return None
    order = np.random.default_rng([seed, 3]).permutation(len(real))
    queries, items = real[order[:n_queries]], real[order[n_queries:]]
    return local_intrinsic_dimension(items, queries, exact_search(items, queries, k=LID_NEIGHBOURS))


# --------------------------------------------------------------------------------------------- search


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit numpy's BLAS to `n` threads inside the block (no-op when threadpoolctl is missing or n is None)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def exact_search(items: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Top-k labels by inner product (unit vectors: cosine), best first; score matrices capped in size."""
    n = len(items)
    k = min(k, n)
    batch = max(1, SCORE_BYTES // (4 * n))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), batch):
        scores = queries[start : start + batch] @ items.T
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + batch] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum()
    return float(hits / truth.size)


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, a fallback off Linux


def build_hnsw(items: np.ndarray, config: AnnConfig, threads: int, scratch: Path):
    """The index plus its build record (seconds, saved file size, RSS growth)."""
    import hnswlib

    rss_before = _rss_bytes()
    started = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=items.shape[1])
    index.init_index(max_elements=len(items), ef_construction=config.ef_construction, M=config.m,
                     random_seed=config.seed)
    index.set_num_threads(threads)
    index.add_items(items, np.arange(len(items)), num_threads=threads)
    seconds = time.perf_counter() - started
    rss_growth = _rss_bytes() - rss_before
    path = scratch / "items.hnsw"
    index.save_index(str(path))
    index_bytes = path.stat().st_size
    path.unlink()
    record = {"size": len(items), "method": "hnsw", "ef": None, "mode": "build", "threads": threads, "m": config.m,
              "ef_construction": config.ef_construction, "build_seconds": round(seconds, 3),
              "index_bytes": int(index_bytes), "rss_growth_bytes": int(rss_growth),
              "vector_bytes": int(items.nbytes)}
    return index, record


def _time_batched(search, queries: np.ndarray, min_seconds: float) -> tuple[np.ndarray, float, float]:
    """(labels, qps, ms per batch call): the whole batch, repeated until `min_seconds` have passed."""
    calls, labels = 0, None
    started = time.perf_counter()
    while True:
        labels = search(queries)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return labels, calls * len(queries) / elapsed, 1000 * elapsed / calls


def _time_batch1(search, queries: np.ndarray, budget_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels of the queries run, per-query latency in seconds): stops after `budget_s`."""
    labels, latencies = [], []
    deadline = time.perf_counter() + budget_s
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t0 = time.perf_counter()
        found = search(q)
        t1 = time.perf_counter()
        labels.append(found[0])
        latencies.append(t1 - t0)
        if t1 > deadline and i + 1 >= MIN_LATENCY_QUERIES:
            break
    return np.asarray(labels), np.asarray(latencies)


def _measure(search, queries, truth, mode, config: AnnConfig) -> dict:
    if mode == "batched":
        labels, qps, batch_ms = _time_batched(search, queries, config.min_batch_seconds)
        return {"recall@10": recall_at_k(labels, truth), "qps": qps, "batch_ms": batch_ms,
                "p50_ms": None, "p99_ms": None, "n_queries": len(queries)}
    labels, latencies = _time_batch1(search, queries, config.latency_budget_s)
    return {"recall@10": recall_at_k(labels, truth[: len(labels)]), "qps": float(1.0 / latencies.mean()),
            "p50_ms": float(1000 * np.percentile(latencies, 50)), "p99_ms": float(1000 * np.percentile(latencies, 99)),
            "n_queries": len(labels)}


def _median_record(samples: list[dict], base: dict) -> dict:
    record = dict(base)
    for key in ("recall@10", "qps", "batch_ms", "p50_ms", "p99_ms", "n_queries"):
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            value = float(np.median(values))
            record[key] = int(value) if key == "n_queries" else round(value, 6 if key == "recall@10" else 3)
        elif key in ("p50_ms", "p99_ms"):
            record[key] = None
    record["repeats"] = len(samples)
    return record


def measure_size(real: np.ndarray, queries: np.ndarray, size: int, config: AnnConfig, *, threads: int,
                 progress=print) -> list[dict]:
    """Build + exact + hnsw records for one catalogue size."""
    t0 = time.perf_counter()
    items = make_catalogue(real, size, config.seed, config.noise, config.noise_rank)
    progress(f"[{size:,}] {len(items):,} × {items.shape[1]} vectors in {time.perf_counter() - t0:.1f}s; "
             f"building hnswlib (M={config.m}, ef_construction={config.ef_construction}, {threads} threads) ...")
    scratch_root = Path(config.out_dir)
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix=".ann-") as scratch:
        index, build = build_hnsw(items, config, threads, Path(scratch))
    progress(f"[{size:,}] built in {build['build_seconds']:.1f}s; index file {build['index_bytes'] / 2**20:.1f} MiB, "
             f"RSS +{build['rss_growth_bytes'] / 2**20:.1f} MiB")

    with blas_threads(threads):
        truth = exact_search(items, queries)  # the very call the batched mode times, so it scores recall 1
        nearest = exact_search(items, queries, k=LID_NEIGHBOURS)
    build["lid"] = round(local_intrinsic_dimension(items, queries, nearest), 2)
    progress(f"[{size:,}] local intrinsic dimension around the queries: {build['lid']:.1f}")

    def exact(mode):
        return lambda q: exact_search(items, q)

    def hnsw(ef, mode):
        n_threads = threads if mode == "batched" else 1

        def search(q):
            labels, _ = index.knn_query(q, k=K, num_threads=n_threads)
            return labels
        index.set_ef(ef)
        return search

    samples: dict[tuple, list[dict]] = {}
    for repeat in range(config.repeats):
        for mode in MODES:
            n_threads = threads if mode == "batched" else 1
            with blas_threads(n_threads):
                # Exact and every ef, alternated within each repeat so machine noise hits them alike.
                for ef in (None, *config.efs):
                    search = exact(mode) if ef is None else hnsw(ef, mode)
                    search(queries[:2])  # warm-up
                    samples.setdefault((ef, mode), []).append(_measure(search, queries, truth, mode, config))
        exact_b = samples[(None, "batched")][-1]["qps"]
        progress(f"[{size:,}] repeat {repeat + 1}/{config.repeats}: exact batched {exact_b:.0f} qps, "
                 + ", ".join(f"ef={ef} r={samples[(ef, 'batched')][-1]['recall@10']:.3f} "
                             f"{samples[(ef, 'batched')][-1]['qps']:.0f} qps" for ef in config.efs))
    records = [build]
    for (ef, mode), group in samples.items():
        base = {"size": size, "method": "exact" if ef is None else "hnsw", "ef": ef, "mode": mode,
                "threads": threads if mode == "batched" else 1}
        records.append(_median_record(group, base))
    del index, items
    return records


# ---------------------------------------------------------------------------------------------- suite


def bar_checks(records: list[dict]) -> list[dict]:
    """Per size and mode: the smallest ef reaching recall@10 ≥ 0.98 and its QPS over exact search's."""
    checks = []
    for size in sorted({r["size"] for r in records}):
        for mode in MODES:
            exact = next((r for r in records if r["size"] == size and r["method"] == "exact" and r["mode"] == mode),
                         None)
            curve = sorted((r for r in records if r["size"] == size and r["method"] == "hnsw" and r["mode"] == mode),
                           key=lambda r: r["ef"])
            if exact is None or not curve:
                continue
            good = next((r for r in curve if r["recall@10"] >= RECALL_TARGET), None)
            check = {"bar": f"hnswlib at {size:,} items ({mode}): recall@10 ≥ {RECALL_TARGET} at "
                            f"≥ {SPEEDUP_NEEDED:.0f}× the QPS of exact search",
                     "size": size, "mode": mode, "needed": SPEEDUP_NEEDED, "exact_qps": exact["qps"]}
            if good is None:
                best = max(curve, key=lambda r: r["recall@10"])
                check.update(value=None, met=False, ef=None, recall=best["recall@10"],
                             note=f"no ef reached recall@10 {RECALL_TARGET} (best {best['recall@10']:.4f} "
                                  f"at ef={best['ef']})")
            else:
                ratio = good["qps"] / exact["qps"] if exact["qps"] else None
                check.update(value=ratio, met=bool(ratio is not None and ratio >= SPEEDUP_NEEDED), ef=good["ef"],
                             recall=good["recall@10"], hnsw_qps=good["qps"])
            checks.append(check)
    return checks


def reproduce_command(config: AnnConfig) -> str:
    parts = ["lmrec bench ann", f"--sizes {','.join(str(s) for s in config.sizes)}",
             f"--efs {','.join(str(e) for e in config.efs)}", f"--queries {config.n_queries}",
             f"--m {config.m}", f"--ef-construction {config.ef_construction}", f"--repeats {config.repeats}",
             f"--seed {config.seed}", f"--noise {config.noise}"]
    if config.noise == "principal":
        parts.append(f"--noise-rank {config.noise_rank}")
    if config.embeddings is not None:
        parts.append(f"--embeddings {config.embeddings}")
    elif config.dataset != AnnConfig.dataset:
        parts.append(f"--dataset {config.dataset}")
    return " ".join(parts)


def run_ann(config: AnnConfig, *, progress=print) -> dict:
    started = time.perf_counter()
    threads = config.threads or available_cores()
    real, source = load_real_embeddings(config, progress=progress)
    queries = make_queries(real, config.n_queries, config.seed, config.noise, config.noise_rank)
    config_json = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items()}
    with blas_threads(threads):
        real_lid = real_intrinsic_dimension(real, config.seed)
    config_json.update(threads=threads, k=K, noise_scale=NOISE_SCALE, embeddings_source=source,
                       n_real_vectors=len(real), dim=int(real.shape[1]), lid_neighbours=LID_NEIGHBOURS,
                       real_lid=None if real_lid is None else round(real_lid, 2))
    out = {"suite": "ann", "command": invoked_command() or reproduce_command(config),
           "reproduce": reproduce_command(config), "machine": machine_facts(), "config": config_json,
           "records": [], "bars": [], "seconds": 0.0}
    for size in config.sizes:
        out["records"] += measure_size(real, queries, size, config, threads=threads, progress=progress)
        out["bars"] = bar_checks(out["records"])
        out["seconds"] = round(time.perf_counter() - started, 1)
        write_results(out, config.out_dir, config.name)  # partial results survive a long run
        for bar in (b for b in out["bars"] if b["size"] == size):
            value = "–" if bar["value"] is None else f"{bar['value']:.1f}×"
            progress(f"[{size:,}] {'met ' if bar['met'] else 'MISS'} {bar['bar']}: {value} (ef={bar['ef']})")
    return out


# --------------------------------------------------------------------------------------------- output


def write_results(payload: dict, out_dir: Path, name: str) -> list[Path]:
    payload = dict(payload, bars=payload.get("bars") or bar_checks(payload["records"]))
    return write_report(payload, out_dir, name, markdown=render_markdown(payload),
                        plot=lambda png: recall_qps_chart(payload["records"], png))


def _noise_words(config: dict) -> str:
    kind, scale = config.get("noise", "isotropic"), config.get("noise_scale")
    if kind == "principal":
        return (f"Gaussian noise along the real vectors' top {config.get('noise_rank')} principal directions, "
                f"{scale}× the real std along each")
    return f"{kind} Gaussian noise {scale}× the per-dimension std"


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(payload: dict) -> str:
    config, machine = payload["config"], payload["machine"]
    lines = ["# ANN suite: hnswlib vs exact search", "",
             f"Reproduce: `{payload.get('reproduce') or 'lmrec bench ann'}`  ",
             f"Command: `{payload.get('command') or 'lmrec bench ann'}`  ",
             f"Machine: {machine['cpu_model']}, {machine['cores']} cores, SIMD {' '.join(machine['simd_flags'])}; "
             f"hnswlib {machine['packages'].get('hnswlib', '?')}, numpy {machine['packages'].get('numpy', '?')}; "
             f"{machine['date']}  ",
             f"Vectors: {config.get('embeddings_source')}; larger catalogues add synthetic vectors around the real "
             f"ones (a random point between two real vectors plus {_noise_words(config)}, re-normalised). "
             f"{config['n_queries']} held-out perturbed queries, k={config.get('k', K)}, cosine space, "
             f"M={config['m']}, ef_construction={config['ef_construction']}, median of {config['repeats']} "
             f"interleaved repeats.  ",
             f"Modes: *batched* = all queries per call on {config.get('threads')} threads (QPS = queries / wall time); "
             "*batch1* = one query per call on one thread (latency per query; QPS = 1 / mean latency). "
             "Exact = numpy `queries @ items.T` + argpartition, same threads.", ""]
    if config.get("real_lid") is not None:
        lines += [f"Local intrinsic dimension (LID: maximum-likelihood estimate from each query's "
                  f"{config.get('lid_neighbours', 20)} nearest items, median; higher is harder for a graph index): "
                  f"the real vectors {config['real_lid']:.1f} (a fifth of them as queries against the rest); "
                  "each catalogue's is under its heading.", ""]
    records = payload["records"]
    for size in sorted({r["size"] for r in records}):
        group = [r for r in records if r["size"] == size]
        build = next((r for r in group if r["mode"] == "build"), None)
        exact = {r["mode"]: r for r in group if r["method"] == "exact"}
        lines += [f"## {size:,} items", ""]
        if build:
            lines += [f"Build: {build['build_seconds']:.1f} s on {build['threads']} threads; index file "
                      f"{build['index_bytes'] / 2**20:.1f} MiB; RSS growth {build['rss_growth_bytes'] / 2**20:.1f} MiB "
                      f"(raw vectors {build['vector_bytes'] / 2**20:.1f} MiB)."
                      + (f" LID around the queries: {build['lid']:.1f}." if build.get("lid") is not None else ""), ""]
        rows = []
        efs = sorted({r["ef"] for r in group if r["method"] == "hnsw" and r["mode"] in MODES})
        for ef in [None, *efs]:
            by_mode = {r["mode"]: r for r in group if r["ef"] == ef and r["mode"] in MODES
                       and r["method"] == ("exact" if ef is None else "hnsw")}
            b, s = by_mode.get("batched"), by_mode.get("batch1")
            if not b and not s:
                continue

            def speedup(r, mode):
                base = exact.get(mode)
                return None if r is None or base is None or not base["qps"] else r["qps"] / base["qps"]

            recall = (b or s)["recall@10"]
            rows.append(["exact" if ef is None else f"hnsw ef={ef}", f"{recall:.4f}",
                         _fmt(b and b["qps"], ",.0f"), _fmt(speedup(b, "batched"), ".1f"),
                         _fmt(s and s["qps"], ",.0f"), _fmt(s and s["p50_ms"], ".3f"), _fmt(s and s["p99_ms"], ".3f"),
                         _fmt(speedup(s, "batch1"), ".1f")])
        lines += markdown_table(["method", "recall@10", "batched QPS", "× exact", "batch1 QPS", "p50 ms", "p99 ms",
                                 "× exact"], rows) + [""]
    if payload.get("bars"):
        lines += ["## Bars", "", f"Issue bar: hnswlib at 1M items, recall@10 ≥ {RECALL_TARGET} at ≥ "
                  f"{SPEEDUP_NEEDED:.0f}× the queries per second of exact search (smallest ef reaching the recall, "
                  "same batching mode).", ""]
        lines += markdown_table(["bar", "ef", "recall@10", "measured", "needed", "met"],
                                [[b["bar"], _fmt(b.get("ef"), "d"), _fmt(b.get("recall"), ".4f"),
                                  "–" if b["value"] is None else f"{b['value']:.1f}×", f"{b['needed']:.0f}×",
                                  "yes" if b["met"] else "NO"] for b in payload["bars"]]) + [""]
        lines += [f"Note: {b['note']}  " for b in payload["bars"] if b.get("note")]
    lines.append(f"Total time: {payload.get('seconds', 0):.0f} s.")
    return "\n".join(lines) + "\n"


def recall_qps_chart(records: list[dict], path: Path) -> Path:
    """recall@10 against QPS (log x), one line per size and one panel per mode; exact search as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sizes = sorted({r["size"] for r in records})
    fig, axes = plt.subplots(1, len(MODES), figsize=(6.0 * len(MODES), 4.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, mode in zip(axes[0], MODES):
        for i, size in enumerate(sizes):
            color = colors[i % len(colors)]
            curve = sorted((r for r in records if r["size"] == size and r["method"] == "hnsw" and r["mode"] == mode),
                           key=lambda r: r["ef"])
            if curve:
                axis.plot([r["qps"] for r in curve], [r["recall@10"] for r in curve], "o-", color=color,
                          label=f"hnsw {size:,}")
                for r in curve:
                    axis.annotate(f"ef {r['ef']}", (r["qps"], r["recall@10"]), textcoords="offset points",
                                  xytext=(4, -10), fontsize=7, color=color)
            exact = next((r for r in records if r["size"] == size and r["method"] == "exact" and r["mode"] == mode),
                         None)
            if exact:
                axis.plot([exact["qps"]], [exact["recall@10"]], marker="*", markersize=13, linestyle="none",
                          color=color, markeredgecolor="black", label=f"exact {size:,}")
        axis.axhline(RECALL_TARGET, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short ranges
        axis.set_xlabel("queries per second (log)")
        axis.set_ylabel("recall@10")
        axis.set_title(f"{mode}: " + ("all queries per call, all cores" if mode == "batched"
                                       else "one query per call, one thread"), fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ CLI


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(float(part)) for part in text.replace("_", "").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = AnnConfig()
    parser.add_argument("--sizes", type=_ints, default=defaults.sizes, metavar="N,N,...",
                        help="catalogue sizes (default: 10000,100000,1000000)")
    parser.add_argument("--efs", type=_ints, default=defaults.efs, metavar="EF,EF,...",
                        help="hnswlib ef values searched (default: 10,20,40,80,160,320,400,480,640)")
    parser.add_argument("--queries", type=positive_int, default=defaults.n_queries, help="held-out queries (default: 1000)")
    parser.add_argument("--m", type=positive_int, default=defaults.m, help="hnswlib M (default: 32, as the served indexes)")
    parser.add_argument("--ef-construction", type=positive_int, default=defaults.ef_construction,
                        help="hnswlib ef_construction (default: 200)")
    parser.add_argument("--embeddings", default=None, metavar="PATH.npy",
                        help="real item embeddings (.npy, or a bundle folder with item_embeddings.npy); "
                             "default: encode the --dataset item texts")
    parser.add_argument("--dataset", choices=MOVIELENS, default=None,
                        help=f"whose item texts are encoded for the real vectors (default: {defaults.dataset})")
    parser.add_argument("--data-dir", default=None, help="that data set's folder (default: ../shared/data/DATASET)")
    parser.add_argument("--repeats", type=positive_int, default=defaults.repeats, help="interleaved repeats (median)")
    parser.add_argument("--threads", type=positive_int, default=None, help="threads for build and batched search (default: all)")
    parser.add_argument("--seed", type=seed_value, default=defaults.seed)
    parser.add_argument("--noise", choices=NOISES, default=defaults.noise,
                        help="synthetic noise: along the real vectors' top principal directions (default), "
                             "independent per dimension, or correlated like the real vectors")
    parser.add_argument("--noise-rank", type=positive_int, default=defaults.noise_rank,
                        help=f"principal directions of the `principal` noise (default: {defaults.noise_rank})")
    parser.add_argument("--out", default=str(defaults.out_dir), help="result folder")
    parser.add_argument("--name", default=defaults.name, help="result file stem")


def config_from_args(args) -> AnnConfig:
    if args.embeddings and (args.dataset or getattr(args, "data_dir", None)):  # they would be ignored
        raise CliError("--embeddings gives the real vectors; --dataset and --data-dir name texts to encode "
                       "instead: pass one or the other")
    if args.embeddings:
        path = Path(args.embeddings)
        if not (path / "item_embeddings.npy" if path.is_dir() else path).is_file():
            raise CliError(f"--embeddings {args.embeddings}: expected a .npy file or a bundle folder with "
                           "item_embeddings.npy (BUILD/bundles/N)")
    check_results_file(args.out, args.name)
    extra = {}
    if getattr(args, "data_dir", None):
        extra["data_dir"] = Path(args.data_dir)
    if getattr(args, "threads", None):
        extra["threads"] = args.threads
    return AnnConfig(sizes=tuple(args.sizes), efs=tuple(args.efs), n_queries=args.queries, m=args.m,
                     ef_construction=args.ef_construction, seed=args.seed,
                     embeddings=Path(args.embeddings) if args.embeddings else None, out_dir=Path(args.out),
                     name=args.name, repeats=args.repeats, noise=args.noise,
                     noise_rank=args.noise_rank, dataset=args.dataset or AnnConfig.dataset, **extra)
