"""`lmrec serve`: the real Triton plus the gateway, started together and stopped together.

Entry point: `serve(config)` blocks until SIGINT/SIGTERM; `running_stack(config)` is the same as a
context manager (the demo and tests use it) that yields the gateway's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from .bundle import bundle_model_names
from .gateway import GatewayConfig, run_gateway
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


def serve(config: ServeConfig, *, progress=print) -> None:
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
