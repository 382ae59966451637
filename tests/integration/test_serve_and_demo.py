"""`lmrec serve` and `lmrec demo` as a user runs them: real subprocesses, clean shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time

import pytest

from lmrec.client import ClientError, RecommenderClient
from lmrec.server.triton_launcher import TritonConfig, TritonError, TritonProcess, free_port

from .conftest import LMREC, ManagedProcess, wait_for_health

pytestmark = pytest.mark.integration


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serve_starts_triton_and_gateway_and_stops_both_on_sigterm(build, tmp_path):
    build_dir = build.bundle_dir.parent.parent
    port = free_port()
    triton_port = free_port()
    process = ManagedProcess([LMREC, "serve", "--build-dir", str(build_dir), "--port", str(port)],
                             tmp_path / "serve.log")
    try:
        wait_for_health(f"127.0.0.1:{port}", process, timeout=120)
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            assert len(client.recommend("u1", k=4).items) == 4
            with pytest.raises(ClientError):
                client.recommend("nobody-at-all", k=4)
        log = process.log()
        assert "Triton ready" in log
        # The gateway's JSON log lines, with the request id (as `lmrec gateway` writes them), each once.
        failures = [json.loads(line) for line in log.splitlines()
                    if line.startswith("{") and "Recommend failed" in line]
        assert len(failures) == 1 and failures[0]["request_id"] != "-", log
        assert log.count("Recommend failed") == 1, log
        triton_port = int(log.split("Triton ready (gRPC 127.0.0.1:")[1].split(")")[0])
        assert port_is_open(triton_port)
    finally:
        code = process.stop(signal.SIGTERM)
    assert code == 0, process.log()
    assert "stopped" in process.log()
    deadline = time.monotonic() + 10
    while port_is_open(triton_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_is_open(triton_port), "Triton still listening after serve stopped"
    assert not port_is_open(port)


def test_demo_on_an_existing_build(build, tmp_path):
    build_dir = tmp_path / "demo-build"
    shutil.copytree(build.bundle_dir.parent.parent, build_dir)
    out = subprocess.run([LMREC, "demo", "--build-dir", str(build_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for expected in ("health: SERVING", "Recommend user", "anonymous session", "SimilarItems", "demo finished"):
        assert expected in out.stdout


def test_launcher_errors_are_actionable(tmp_path):
    with pytest.raises(TritonError, match="run `lmrec build` first"):
        TritonProcess(TritonConfig(repository=tmp_path / "missing")).start()
    (tmp_path / "repo" / "text_encoder" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "text_encoder" / "config.pbtxt").write_text('name: "text_encoder"\nbackend: "python"\n')
    with pytest.raises(TritonError, match="version 1 is empty"):
        TritonProcess(TritonConfig(repository=tmp_path / "repo")).start()
    # A version folder whose model cannot load: the real server's own error is surfaced promptly.
    (tmp_path / "repo" / "text_encoder" / "1" / "README").write_text("no model here")
    with pytest.raises(TritonError, match="failed to load") as error:
        TritonProcess(TritonConfig(repository=tmp_path / "repo", startup_timeout_s=120)).start()
    assert "model.py" in str(error.value)


def test_gateway_refuses_a_corrupt_bundle(build, tmp_path):
    build_dir = tmp_path / "corrupt"
    shutil.copytree(build.bundle_dir.parent.parent, build_dir)
    index = build_dir / "bundles" / str(build.version) / "items.hnsw"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    out = subprocess.run([LMREC, "gateway", "--build-dir", str(build_dir), "--triton-url", "127.0.0.1:1",
                          "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "items.hnsw" in out.stderr and "checksum" in out.stderr and "Traceback" not in out.stderr


def test_triton_does_not_outlive_a_parent_killed_without_cleanup(build, tmp_path):
    """SIGKILL (or the OOM killer) gives `lmrec serve` no chance to stop Triton, which runs in its own session:
    the kernel's parent-death signal must end it."""
    import os
    import sys

    build_dir = build.bundle_dir.parent.parent
    starter = ("import sys, time\nfrom pathlib import Path\n"
               "from lmrec.server.triton_launcher import TritonConfig, TritonProcess\n"
               "build = Path(sys.argv[1])\n"
               "triton = TritonProcess(TritonConfig(repository=build / 'model_repository', models=('text_encoder',)))\n"
               "print(triton.start()._process.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", starter, str(build_dir)], stdout=subprocess.PIPE, text=True)
    triton_pid = int(parent.stdout.readline())

    def running() -> bool:
        try:
            return open(f"/proc/{triton_pid}/stat").read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    try:
        assert running()
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(), "Triton outlived the process that started it"
    finally:
        if running():
            os.kill(triton_pid, signal.SIGKILL)
