"""Start the real `tritonserver` (from the nvidia-pytriton wheel) on a model repository, and stop it.

Entry point: `start_triton(config) -> TritonProcess` (also a context manager). Models load in
explicit model-control mode; the call returns once every requested model is ready, and fails fast
with the server's last log lines if the process dies or a model never becomes ready.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


# Log lines after which a requested model will never become ready: fail at once instead of waiting
# for the start-up timeout (Triton keeps loading other models and does not exit by itself).
FATAL_LOG_PATTERNS = ("failed to load '", "Failed to preinitialize Python stub", "Stub process", "ModuleNotFoundError",
                      "failed to initialize")


class TritonError(RuntimeError):
    """Triton could not be found, started, or did not load a model; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    repository: Path
    models: tuple[str, ...] = ("text_encoder",)
    grpc_port: int = 0  # 0: pick a free port
    http_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"
    startup_timeout_s: float = 180.0
    log_verbose: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TritonInstallation:
    binary: Path
    library_dir: Path
    python_backend_dir: Path
    python_stub: Path


def find_triton() -> TritonInstallation:
    """Locate the tritonserver binary, its bundled libraries and the python backend in the wheel."""
    try:
        import pytriton
    except ImportError as error:
        raise TritonError("nvidia-pytriton is not installed (pip install nvidia-pytriton==0.7.0)") from error
    root = Path(pytriton.__file__).parent / "tritonserver"
    site = Path(pytriton.__file__).parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        library_dir=site / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        python_stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for path in (found.binary, found.library_dir, found.python_backend_dir, found.python_stub):
        if not path.exists():
            raise TritonError(f"Triton part missing: {path} (reinstall nvidia-pytriton==0.7.0 for Python {version})")
    return found


def check_repository(repository: Path, models: tuple[str, ...]) -> None:
    if not repository.is_dir():
        raise TritonError(f"model repository {repository} does not exist (run `lmrec build` first)")
    for name in models:
        model_dir = repository / name
        if not (model_dir / "config.pbtxt").is_file():
            raise TritonError(f"model '{name}' has no config.pbtxt in {model_dir} (run `lmrec build` first)")
        versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise TritonError(f"model '{name}' has no version folder in {model_dir} (run `lmrec build` first)")
        latest = max(versions, key=lambda p: int(p.name))
        if not any(latest.iterdir()):
            raise TritonError(f"model '{name}' version {latest.name} is empty: {latest} (rebuild, or remove the folder)")


def _terminate_with_parent(parent_pid: int):
    """A preexec_fn for the forked child, before exec: SIGTERM when the process that started Triton dies, even
    by SIGKILL or the OOM killer, whose handlers never run (Triton runs in its own session, so a signal to the
    parent's group does not reach it either). Linux only; the kernel ties it to the starting thread, and every
    caller starts Triton from its main thread. `prctl` is looked up here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    PR_SET_PDEATHSIG = 1

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody will signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def models_in_repository(repository: Path) -> tuple[str, ...]:
    """Every model folder (one with a config.pbtxt) in the repository, text_encoder first."""
    repository = Path(repository)
    if not repository.is_dir():
        return ("text_encoder",)
    names = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    return tuple(sorted(names, key=lambda n: n != "text_encoder")) or ("text_encoder",)


class TritonProcess:
    """A running tritonserver; `stop()` (or leaving the `with` block) terminates it and cleans up."""

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        self.grpc_port = config.grpc_port or free_port()
        self.http_port = config.http_port or free_port()
        self.metrics_port = config.metrics_port or free_port()
        # Made by `start` and removed by `stop`: an object that never starts leaves no folder behind.
        self._workdir: Path | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    def _backend_dir(self, triton: TritonInstallation) -> Path:
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True)
        for source in (triton.python_backend_dir / "libtriton_python.so",
                       triton.python_backend_dir / "triton_python_backend_utils.py", triton.python_stub):
            (python_dir / source.name).symlink_to(source)
        return self._workdir / "backends"

    def _environment(self, triton: TritonInstallation) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(triton.library_dir), env.get("LD_LIBRARY_PATH")]))
        # The python backend stub embeds an interpreter that finds its prefix through `python3` on PATH:
        # put this environment's bin/ first so models import numpy, onnxruntime, tokenizers and lmrec.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self) -> "TritonProcess":
        self._workdir = Path(tempfile.mkdtemp(prefix="lmrec-triton-"))
        self.log_path = self._workdir / "tritonserver.log"
        try:  # a refused repository or a missing binary must not leave the folder behind either
            self._launch()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        repository = Path(self.config.repository).resolve()
        check_repository(repository, self.config.models)
        triton = find_triton()
        args = [
            str(triton.binary),
            f"--model-repository={repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self._backend_dir(triton)}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--grpc-address={self.config.host}",
            f"--http-address={self.config.host}",
            f"--log-verbose={self.config.log_verbose}",
            *[f"--load-model={name}" for name in self.config.models],
            *self.config.extra_args,
        ]
        log = open(self.log_path, "wb")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self._environment(triton),
                                         start_new_session=True, preexec_fn=_terminate_with_parent(os.getpid()))
        log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):  # AttributeError: never started, no log
            return ""

    def _fatal_log_line(self) -> str | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if any(pattern in line for pattern in FATAL_LOG_PATTERNS):
                return line.strip()
        return None

    def _ready(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise TritonError(f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}")
            fatal = self._fatal_log_line()
            if fatal:
                raise TritonError(f"a model failed to load: {fatal}\n{self.log_tail()}")
            if self._ready("/v2/health/live") and all(self._ready(f"/v2/models/{m}/ready") for m in self.config.models):
                return
            time.sleep(0.25)
        raise TritonError(f"models {list(self.config.models)} not ready after {self.config.startup_timeout_s}s:\n"
                          f"{self.log_tail()}")

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
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "TritonProcess":
        return self.start() if self._process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_triton(config: TritonConfig) -> TritonProcess:
    return TritonProcess(config).start()
