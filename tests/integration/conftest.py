"""Real servers for the integration tests: a tiny build, the real Triton, the real gateway process.

Everything starts on free ports, readiness is polled, a dead process fails the test at once with its
log, and every process is stopped at the end of the session whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrec.client import ClientError, RecommenderClient
from lmrec.export.build import BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig, SyntheticConfig
from lmrec.server.triton_launcher import TritonConfig, TritonProcess, free_port

LMREC = str(Path(sys.executable).parent / "lmrec")
TINY = SyntheticConfig(n_users=60, n_items=90, min_interactions=8, max_interactions=25)


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return build_bundle(BuildConfig(data=DataConfig(dataset="synthetic", synthetic=TINY), output_dir=out),
                        progress=lambda *_: None)


@pytest.fixture(scope="session")
def triton(build):
    with TritonProcess(TritonConfig(repository=build.repository_dir)) as process:
        yield process


class ManagedProcess:
    """A subprocess whose output goes to a file, so a failure can show what it said."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.alive():
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def wait_for_health(address: str, process: ManagedProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with RecommenderClient(address, timeout_s=1.0) as client:
        while time.monotonic() < deadline:
            if not process.alive():
                pytest.fail(f"process exited with {process.process.returncode}:\n{process.log()}")
            try:
                if client.health() == "SERVING":
                    return
            except ClientError:
                pass
            time.sleep(0.2)
    pytest.fail(f"not SERVING after {timeout}s:\n{process.log()}")


@pytest.fixture(scope="session")
def gateway_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def gateway(build, triton, tmp_path_factory, gateway_metrics_port):
    port = free_port()
    process = ManagedProcess(
        [LMREC, "gateway", "--build-dir", str(build.bundle_dir.parent.parent), "--triton-url", triton.grpc_url,
         "--port", str(port), "--metrics-port", str(gateway_metrics_port),
         "--state-dir", str(tmp_path_factory.mktemp("gateway-state"))],
        tmp_path_factory.mktemp("gateway") / "gateway.log",
    )
    try:
        wait_for_health(f"127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
def client(gateway):
    with RecommenderClient(gateway) as c:
        yield c
