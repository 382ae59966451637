"""`lmrec serve`: the real Triton plus the gateway, started together and stopped together.

Entry point: `serve(config)` blocks until SIGINT/SIGTERM; `running_stack(config)` is the same as a
context manager (the demo and tests use it) that yields the gateway's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from lmrec.export.repository import BUNDLES_DIR

from .bundle import BundleError, bundle_model_names, complete_versions
from .event_store import open_event_store
from .gateway import STATE_DIR, GatewayConfig, run_gateway
from .recommend import ServingConfig
from .triton_launcher import TritonConfig, TritonProcess, models_in_repository


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    build_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051  # 0: a free port
    triton_grpc_port: int = 0
    bundle_version: int | None = None
    state_dir: Path | None = None  # events and added items; <build_dir>/gateway_state by default
    metrics_port: int | None = None
    serving: ServingConfig = field(default_factory=ServingConfig)


def _triton_config(config: ServeConfig) -> TritonConfig:
    """Triton starts with the models of the bundle it will serve: a sibling model built for another
    config (a GPU one on a CPU machine) is loaded only when a deploy asks for it."""
    repository = Path(config.build_dir) / "model_repository"
    models = bundle_model_names(config.build_dir, config.bundle_version) or models_in_repository(repository)
    return TritonConfig(repository=repository, models=models, grpc_port=config.triton_grpc_port)


def _gateway_config(config: ServeConfig, triton: TritonProcess) -> GatewayConfig:
    return GatewayConfig(build_dir=config.build_dir, triton_url=triton.grpc_url, host=config.host,
                         port=config.port, bundle_version=config.bundle_version, serving=config.serving,
                         state_dir=config.state_dir, metrics_port=config.metrics_port)


def check_before_start(config: ServeConfig) -> None:
    """What would otherwise fail only once Triton is up (seconds to minutes of loading models), refused now
    naming the `lmrec serve` option: a bundle that does not exist, a port another process holds."""
    build_dir = Path(config.build_dir)
    versions = complete_versions(build_dir)
    if config.bundle_version is not None and config.bundle_version not in versions:
        available = ", ".join(map(str, versions)) or "none"
        raise BundleError(f"--bundle-version {config.bundle_version}: no complete bundle {config.bundle_version} in "
                          f"{build_dir / BUNDLES_DIR} (complete bundles: {available})")
    if not versions:
        raise BundleError(f"--build-dir {build_dir}: no complete bundle under {build_dir / BUNDLES_DIR} "
                          "(run `lmrec build` first)")
    events_file = (Path(config.state_dir) if config.state_dir else build_dir / STATE_DIR) / "events.sqlite3"
    if events_file.exists():  # a file that is not an event store (EventStoreError names it)
        open_event_store("sqlite", events_file).close()
    check_ports_free(config.host, config.port, config.metrics_port)


def check_ports_free(host: str, port: int, metrics_port: int | None) -> None:
    """The gateway's --port and --metrics-port (`lmrec serve` and `lmrec gateway`) can be bound now."""
    if metrics_port is not None and metrics_port == port != 0:
        raise OSError(f"--metrics-port {metrics_port} is the gateway's --port too: give another one")
    check_port_free("--port", host, port)
    if metrics_port is not None:
        check_port_free("--metrics-port", host, metrics_port)


def check_port_free(option: str, host: str, port: int) -> None:
    """Bind `host:port` for a moment (as the gateway will, reusing an address in TIME_WAIT as gRPC and the
    metrics server do); port 0 picks a free one later and is not checked."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    bound, failure = 0, OSError("no address")
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                bound += 1
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise OSError(f"{option} {port}: {host}:{port} is in use by another process") from None
                failure = error
    if not bound:
        raise OSError(f"{option} {port}: cannot listen on {host}:{port} ({failure.strerror or failure})")


def serve(config: ServeConfig, *, progress=print) -> None:
    check_before_start(config)
    progress(f"starting Triton on {Path(config.build_dir) / 'model_repository'} ...")
    with TritonProcess(_triton_config(config)) as triton:
        progress(f"Triton ready (gRPC {triton.grpc_url}); starting the gateway ...")
        asyncio.run(run_gateway(_gateway_config(config, triton),
                                on_ready=lambda port: progress(f"gateway serving on {config.host}:{port} "
                                                               "(Ctrl-C stops both)")))
    progress("stopped")


@contextlib.contextmanager
def running_stack(config: ServeConfig, *, progress=print):
    """Triton + gateway (in a background thread) for the duration of the block; yields 'host:port'."""
    with TritonProcess(_triton_config(config)) as triton:
        progress(f"Triton ready (gRPC {triton.grpc_url})")
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        ready = threading.Event()
        state: dict = {}

        def on_ready(port: int) -> None:
            state["port"] = port
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(run_gateway(replace(_gateway_config(config, triton)), on_ready=on_ready,
                                                    stop=stop))
            except BaseException as error:  # surfaced to the caller below
                state["error"] = error
                ready.set()

        thread = threading.Thread(target=run, name="lmrec-gateway", daemon=True)
        thread.start()
        ready.wait()
        if "error" in state:
            raise state["error"]
        address = f"{config.host}:{state['port']}"
        progress(f"gateway ready on {address}")
        try:
            yield address
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=15)
            loop.close()
