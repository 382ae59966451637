"""start_gateway undoes a start that fails part way: the error names the option, and nothing is left
serving or open (a gRPC server left started was dropped by the closing loop with 'Event loop is closed')."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from lmrec.server import gateway
from lmrec.server.gateway import GatewayConfig, start_gateway
from lmrec.server.model_control import ModelControlError
from lmrec.server.triton_launcher import free_port


class FakeTritonClient:
    """Stands in for TritonTextEncoder and TritonModelControl: records that it was closed."""

    instances: list["FakeTritonClient"] = []
    live = True

    def __init__(self, *args, **kwargs) -> None:
        self.closed = False
        FakeTritonClient.instances.append(self)

    async def is_live(self) -> bool:
        return FakeTritonClient.live

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_stack(monkeypatch):
    """Everything start_gateway needs short of a bundle and a Triton."""
    FakeTritonClient.instances = []
    FakeTritonClient.live = True
    opened = []

    def open_store(kind, path=None):
        store = SimpleNamespace(items=lambda: [], closed=False)
        store.close = lambda: setattr(store, "closed", True)
        opened.append(store)
        return store

    async def nothing(*args, **kwargs):
        return SimpleNamespace()

    monkeypatch.setattr(gateway, "load_bundle", lambda *a, **k: SimpleNamespace(label="1"))
    monkeypatch.setattr(gateway, "TritonTextEncoder", FakeTritonClient)
    monkeypatch.setattr(gateway, "TritonModelControl", FakeTritonClient)
    monkeypatch.setattr(gateway, "open_event_store", open_store)
    monkeypatch.setattr(gateway, "pin_models", nothing)
    monkeypatch.setattr(gateway, "prepare_state", nothing)
    monkeypatch.setattr(gateway, "encode_with", lambda *a: None)
    monkeypatch.setattr(gateway, "Recommender", lambda state, events, encoder, serving, metrics:
                        SimpleNamespace(metrics=metrics, events=events, overlap=ThreadPoolExecutor(max_workers=1)))
    monkeypatch.setattr(gateway, "Deployer", lambda *a, **k: SimpleNamespace())
    return opened


def _can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_a_busy_metrics_port_is_named_and_leaves_no_grpc_server_running(fake_stack, tmp_path, busy_port):
    grpc_port, busy = free_port(), busy_port
    config = GatewayConfig(build_dir=tmp_path, triton_url="127.0.0.1:1", port=grpc_port, metrics_port=busy,
                           state_dir=tmp_path / "state", blas_threads=None)

    async def start():
        with pytest.raises(OSError) as raised:
            await start_gateway(config)
        return str(raised.value)

    message = asyncio.run(start())
    assert f"--metrics-port {busy}" in message and "in use" in message
    assert _can_bind(grpc_port), "the gRPC server was left listening"
    assert all(client.closed for client in FakeTritonClient.instances) and len(FakeTritonClient.instances) == 2
    assert [store.closed for store in fake_stack] == [True]


def test_no_triton_at_the_address_is_a_model_control_error_naming_it_and_opens_nothing(fake_stack, tmp_path):
    FakeTritonClient.live = False
    config = GatewayConfig(build_dir=tmp_path, triton_url="127.0.0.1:1", port=0, state_dir=tmp_path / "state",
                           blas_threads=None)
    with pytest.raises(ModelControlError, match=r"no Triton answers at 127\.0\.0\.1:1: is it running"):
        asyncio.run(start_gateway(config))
    assert fake_stack == []  # the event store was never opened
    assert all(client.closed for client in FakeTritonClient.instances)


def test_a_gateway_that_starts_still_serves_after_the_reordering(fake_stack, tmp_path):
    config = GatewayConfig(build_dir=tmp_path, triton_url="127.0.0.1:1", port=0, metrics_port=0,
                           state_dir=tmp_path / "state", blas_threads=None)

    async def start_and_close():
        running = await start_gateway(config)
        try:
            assert running.port > 0 and running.metrics_port and running.metrics_port > 0
            assert not _can_bind(running.port)
        finally:
            await running.close()
        return running.port

    port = asyncio.run(start_and_close())
    assert _can_bind(port)


def test_the_failed_start_does_not_hide_its_error_behind_a_failing_close(fake_stack, tmp_path, monkeypatch):
    async def broken_close(self):
        raise RuntimeError("close failed too")

    monkeypatch.setattr(FakeTritonClient, "close", broken_close)
    FakeTritonClient.live = False
    config = GatewayConfig(build_dir=tmp_path, triton_url="127.0.0.1:1", port=0, blas_threads=None)
    with pytest.raises(ModelControlError):
        asyncio.run(start_gateway(config))


def test_a_busy_grpc_port_is_named_and_stops_the_metrics_endpoint_already_started(fake_stack, tmp_path, busy_port):
    metrics_port, busy = free_port(), busy_port
    config = GatewayConfig(build_dir=tmp_path, triton_url="127.0.0.1:1", port=busy, metrics_port=metrics_port,
                           state_dir=tmp_path / "state", blas_threads=None)
    with pytest.raises(OSError, match=f"--port {busy}: cannot listen"):
        asyncio.run(start_gateway(config))
    assert _can_bind(metrics_port), "the metrics endpoint was left serving"
    assert [store.closed for store in fake_stack] == [True]
