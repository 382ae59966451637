"""Gateway load suite: the settings of one run (`GatewayLoadConfig`), the constants the gateway_* modules
share, and the settings as JSON and as the command line that reproduces the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# The gateway's own stage list; the gateway_* modules import it from here with the suite's other constants.
from lmrec.server.metrics import STAGES  # noqa: F401

PATHS = ("lmrec", "naive")
# cached: known users answered from the gateway's caches; uncached: anonymous sessions of SESSION_ITEMS items;
# known-uncached: known users sending one new item, their profile (their newest items and that one) encoded.
POPULATIONS = ("cached", "uncached", "known-uncached")
# The encode part measured alone for a known-uncached request, on its own longer profile texts.
KNOWN_USER_ENCODE = "encode_known_user"
DATASETS_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SESSION_ITEMS = 3
P99_OVER_P50_NEEDED = 3.0
PARTS_RATIO_NEEDED = 1.5
SCALE_RATIO_NEEDED = 2.0
MAX_DEGRADED_SHARE = 0.01  # a cell counts as sustained with no errors and at most this share degraded


@dataclass(frozen=True, kw_only=True)
class GatewayLoadConfig:
    build_dir: Path
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    duration_s: float = 10.0
    open_loop_shares: tuple[float, ...] = (0.25, 0.5, 0.7, 0.9)
    k: int = 10
    naive: bool = True
    out_dir: Path = Path("benchmarks/results")
    name: str = "gateway"
    seed: int = 42
    # Used only when build_dir holds no bundle yet: what to build it from.
    dataset: str | None = None  # None: the build folder's name (build/ml-100k → ml-100k)
    data_dir: Path | None = None  # None: ../shared/data/<dataset>
    cached_users: int = 16
    populations: tuple[str, ...] = POPULATIONS  # measured in this order
    # The lmrec gateway's --candidate-cache-users (None: its default). 0 measures "cached" users with only
    # their profile vector cached, their candidates and features computed on every request.
    candidate_cache_users: int | None = None
    # False passes --no-answer-cache: "cached" users then take the vector, candidate and score caches on
    # every request (the path of a returning user whose kept answer no longer applies).
    answer_cache: bool = True
    arrivals: str = "poisson"  # open-loop schedule: "poisson" or "fixed"
    warmup_s: float = 1.0  # unrecorded closed-loop traffic per path and population before measuring
    parts_repeats: int = 200  # calls per unavoidable part measured alone (median)
    timeout_s: float = 10.0  # client deadline per Recommend
    startup_timeout_s: float = 180.0
    # Bar 5: catalogue sizes to pad the bundle to (e.g. (10_000, 1_000_000)); () skips the scale phase.
    scale_items: tuple[int, ...] = ()
    scale_dir: Path | None = None  # where padded builds are kept (reused); None: <build_dir>-scaled/


def _config_json(config: GatewayLoadConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()}


def reproduce_command(config: GatewayLoadConfig) -> str:
    defaults = GatewayLoadConfig(build_dir=config.build_dir)
    parts = ["lmrec bench gateway", f"--build-dir {config.build_dir}"]
    if config.concurrency != defaults.concurrency:
        parts.append(f"--concurrency {','.join(str(c) for c in config.concurrency)}")
    if config.duration_s != defaults.duration_s:
        parts.append(f"--duration {config.duration_s:g}")
    if config.open_loop_shares != defaults.open_loop_shares:
        parts.append(f"--open-loop-shares {','.join(f'{s:g}' for s in config.open_loop_shares)}")
    if config.k != defaults.k:
        parts.append(f"-k {config.k}")
    if not config.naive:
        parts.append("--no-naive")
    if config.arrivals != defaults.arrivals:
        parts.append(f"--arrivals {config.arrivals}")
    if config.populations != defaults.populations:
        parts.append(f"--populations {','.join(config.populations)}")
    if config.cached_users != defaults.cached_users:
        parts.append(f"--cached-users {config.cached_users}")
    if config.candidate_cache_users is not None:
        parts.append(f"--candidate-cache-users {config.candidate_cache_users}")
    if not config.answer_cache:
        parts.append("--no-answer-cache")
    if config.seed != defaults.seed:
        parts.append(f"--seed {config.seed}")
    if config.scale_items:
        parts.append(f"--scale-items {','.join(str(n) for n in config.scale_items)}")
    return " ".join(parts)


def parts_of(population: str, has_ranker: bool) -> list[str]:
    """The unavoidable parts of one Recommend of `population` (bar 4b): an uncached request (either uncached
    population) encodes its profile; every request queries the index; with a fused bundle it asks the ranker."""
    return (["encode"] if population != "cached" else []) + ["index_query"] + (["ranker"] if has_ranker else [])


def block_part(population: str, part: str) -> str:
    """The name under which `measure_parts` timed `part` alone for `population`: a known user's encode is
    timed on their own profile texts, about three times as long as an anonymous session's."""
    return KNOWN_USER_ENCODE if population == "known-uncached" and part == "encode" else part
