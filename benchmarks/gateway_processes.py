"""Gateway load suite: the processes it starts. Per serving path a Triton and an `lmrec gateway` subprocess
on free ports; for the naive path a copy of the model repository with dynamic batching off; SIGTERM turned
into SystemExit so that every started process is stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .gateway_config import GatewayLoadConfig


class ManagedProcess:
    """A subprocess in its own session whose output goes to a file, so a failure can show what it said."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def lmrec_command() -> list[str]:
    script = Path(sys.executable).parent / "lmrec"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from lmrec.cli import main; sys.exit(main())"]


def wait_for_gateway(address: str, metrics_url: str, process: ManagedProcess, timeout_s: float) -> None:
    """Health SERVING and /metrics answering; fails at once with the log if the process dies."""
    from lmrec.client import ClientError, RecommenderClient

    deadline = time.monotonic() + timeout_s
    with RecommenderClient(address, timeout_s=1.0) as client:
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"gateway exited with code {process.process.returncode}:\n{process.log()}")
            try:
                if client.health() == "SERVING":
                    urllib.request.urlopen(metrics_url, timeout=2).read()
                    return
            except (ClientError, urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
    raise RuntimeError(f"gateway not SERVING after {timeout_s:.0f}s:\n{process.log()}")


def without_dynamic_batching(config_text: str) -> str:
    """A model's config.pbtxt with dynamic batching off (the field deleted, not a zero delay)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from lmrec.export.triton_config import render_config

    config = text_format.Parse(config_text, mc.ModelConfig())
    config.ClearField("dynamic_batching")
    return render_config(config)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def naive_build_dir(build_dir: Path, out: Path) -> Path:
    """A build folder serving the same bundles with every model's dynamic batching off."""
    from lmrec.export.repository import BUNDLES_DIR, REPOSITORY_DIR

    build_dir = Path(build_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLES_DIR).symlink_to(build_dir / BUNDLES_DIR, target_is_directory=True)
    for model_dir in sorted((build_dir / REPOSITORY_DIR).iterdir()):
        if not (model_dir / "config.pbtxt").is_file():
            continue
        target = out / REPOSITORY_DIR / model_dir.name
        target.mkdir(parents=True)
        for version in model_dir.iterdir():
            if version.is_dir() and version.name.isdigit():
                shutil.copytree(version, target / version.name, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns("__pycache__"))
        (target / "config.pbtxt").write_text(without_dynamic_batching((model_dir / "config.pbtxt").read_text()))
    return out


@dataclass
class ServingPath:
    name: str
    build_dir: Path
    address: str
    metrics_url: str
    triton: object  # TritonProcess
    gateway: ManagedProcess

    @property
    def triton_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.triton.metrics_port}/metrics"


def start_path(name: str, build_dir: Path, work: Path, config: GatewayLoadConfig, stack: contextlib.ExitStack,
               *, progress=print) -> ServingPath:
    """Triton + gateway for one path; both are registered on `stack` to be stopped whatever happens."""
    from lmrec.server.bundle import bundle_model_names
    from lmrec.server.triton_launcher import TritonConfig, TritonProcess, free_port, models_in_repository

    naive = name == "naive"
    serve_dir = naive_build_dir(build_dir, work / "naive-build") if naive else Path(build_dir)
    repository = serve_dir / "model_repository"
    started = time.perf_counter()
    # The models the served bundle calls, as `lmrec serve` starts them (a sibling built for another config,
    # say a GPU one, is not loaded).
    models = bundle_model_names(serve_dir) or models_in_repository(repository)
    triton = TritonProcess(TritonConfig(repository=repository, models=models, startup_timeout_s=config.startup_timeout_s))
    stack.callback(triton.stop)
    triton.start()
    port, metrics_port = free_port(), free_port()
    args = [*lmrec_command(), "gateway", "--build-dir", str(serve_dir), "--triton-url", triton.grpc_url,
            "--port", str(port), "--metrics-port", str(metrics_port), "--state-dir", str(work / f"{name}-state")]
    if naive:
        args += ["--retriever", "exact", "--no-user-cache"]
    else:
        if config.candidate_cache_users is not None:
            args += ["--candidate-cache-users", str(config.candidate_cache_users)]
        if not config.answer_cache:
            args += ["--no-answer-cache"]
    gateway = ManagedProcess(args, work / f"{name}-gateway.log")
    stack.callback(gateway.stop)
    address, metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for_gateway(address, metrics_url, gateway, config.startup_timeout_s)
    progress(f"[{name}] Triton {triton.grpc_url} + gateway {address} ready in {time.perf_counter() - started:.1f}s")
    return ServingPath(name=name, build_dir=serve_dir, address=address, metrics_url=metrics_url, triton=triton,
                       gateway=gateway)


def check_alive(path: ServingPath) -> None:
    if not path.gateway.alive():
        code = path.gateway.process.returncode
        raise RuntimeError(f"[{path.name}] gateway died (code {code}):\n{path.gateway.log()}")
    if not path.triton.is_running():
        raise RuntimeError(f"[{path.name}] Triton died:\n{path.triton.log_tail()}")
