"""The peer embedding server `infinity-emb`, run from its own venv (`.venv-infinity/`, made by
`benchmarks/peers/setup_infinity.sh`) as a subprocess on a free local port.

    with InfinityServer(model_dir) as server:          # starts, polls /health and /models
        vectors = server.encode_sync(["a text"])       # or: await server.encode(session, texts)

It serves the same local model folder the other paths load (no hub access), with the torch engine on
the CPU, its own dynamic batching (`--batch-size`), and the on-disk vector cache OFF: a benchmark
repeats its texts, and a cache would answer repeats without running the model.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

INFINITY_VERSION = "0.0.78"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-infinity"
SETUP_HINT = "not installed: run benchmarks/peers/setup_infinity.sh"
SERVED_MODEL_NAME = "all-MiniLM-L6-v2"


class InfinityError(RuntimeError):
    """infinity-emb is missing, did not start, or answered with an error; the message says which."""


class InfinityNotInstalled(InfinityError):
    pass


def infinity_binary(venv: Path | None = None) -> Path:
    return Path(venv or DEFAULT_VENV) / "bin" / "infinity_emb"


def is_installed(venv: Path | None = None) -> bool:
    return infinity_binary(venv).is_file()


def installed_version(venv: Path | None = None) -> str | None:
    python = Path(venv or DEFAULT_VENV) / "bin" / "python"
    if not python.is_file():
        return None
    try:
        out = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('infinity-emb'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InfinityServer:
    """One `infinity_emb v2` process serving `model_dir`; `stop()` (or leaving `with`) ends it."""

    def __init__(self, model_dir: Path | str, *, venv: Path | None = None, port: int = 0, batch_size: int = 64,
                 host: str = "127.0.0.1", startup_timeout_s: float = 300.0, log_dir: Path | None = None,
                 extra_args: tuple[str, ...] = (), device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.venv = Path(venv or DEFAULT_VENV)
        self.host = host
        self.port = port or _free_port()
        self.batch_size = batch_size
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="lmrec-infinity-"))
        self.log_path = self._log_dir / "infinity.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_name(self) -> str:
        return SERVED_MODEL_NAME

    def command(self) -> list[str]:
        return [str(infinity_binary(self.venv)), "v2",
                "--model-id", str(self.model_dir), "--served-model-name", SERVED_MODEL_NAME,
                "--engine", "torch", "--device", self.device,
                # fp32 like every other path: on a GPU, infinity's `auto` picks bf16.
                *(("--dtype", "float32") if self.device != "cpu" else ()), "--batch-size", str(self.batch_size),
                "--no-vector-disk-cache", "--no-model-warmup",
                "--host", self.host, "--port", str(self.port), "--log-level", "warning", *self.extra_args]

    def start(self) -> "InfinityServer":
        if not is_installed(self.venv):
            raise InfinityNotInstalled(f"{infinity_binary(self.venv)} missing; {SETUP_HINT}")
        if not self.model_dir.is_dir():
            raise InfinityError(f"model folder {self.model_dir} does not exist")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.pop("VIRTUAL_ENV", None)
        log = open(self.log_path, "wb")
        self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""
        except (urllib.error.URLError, OSError):
            return 0, b""

    def ready(self) -> bool:
        status, _ = self._get("/health")
        if status != 200:
            return False
        status, body = self._get("/models")
        try:
            return status == 200 and any(m.get("id") == SERVED_MODEL_NAME for m in json.loads(body)["data"])
        except (ValueError, KeyError, TypeError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise InfinityError(f"infinity_emb exited with code {code}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise InfinityError(f"infinity_emb not ready after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> "InfinityServer":
        return self.start() if self._process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- requests (OpenAI-style POST /embeddings) -------------------------------------------------------

    def request_body(self, texts: list[str]) -> bytes:
        # base64 float32 rows: the peer's cheapest answer format (no JSON float lists to print or parse).
        return json.dumps({"model": SERVED_MODEL_NAME, "input": list(texts), "encoding_format": "base64"}).encode()

    @staticmethod
    def parse_response(raw: bytes | str, n: int) -> np.ndarray:
        data = json.loads(raw)
        if "data" not in data:
            raise InfinityError(f"infinity-emb answered without embeddings: {str(data)[:300]}")
        rows = sorted(data["data"], key=lambda d: d["index"])
        if len(rows) != n:
            raise InfinityError(f"infinity-emb returned {len(rows)} embeddings for {n} texts")
        return np.stack([np.frombuffer(base64.b64decode(row["embedding"]), np.float32)
                         if isinstance(row["embedding"], str) else np.asarray(row["embedding"], np.float32)
                         for row in rows])

    async def post(self, session, body: bytes) -> bytes:
        """One POST of a prepared body with an `aiohttp.ClientSession`; the raw answer."""
        async with session.post(self.url + "/embeddings", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            raw = await response.read()
            if response.status != 200:
                raise InfinityError(f"infinity-emb HTTP {response.status}: {raw[:300]!r}")
            return raw

    async def encode(self, session, texts: list[str]) -> np.ndarray:
        return self.parse_response(await self.post(session, self.request_body(texts)), len(texts))

    def encode_sync(self, texts: list[str], timeout: float = 120.0) -> np.ndarray:
        request = urllib.request.Request(self.url + "/embeddings", data=self.request_body(texts),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return self.parse_response(response.read(), len(texts))
        except urllib.error.HTTPError as error:
            raise InfinityError(f"infinity-emb HTTP {error.code}: {error.read()[:300]!r}") from error
