"""The ranking gateway: a grpc.aio server for `lmrec.v1.Recommender` plus `grpc.health.v1`.

Entry point: `serve_gateway(config)` (blocks) or `start_gateway(config)` (returns the running server).
Run standalone against a running Triton with `lmrec gateway --build-dir DIR --triton-url HOST:PORT`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lmrec.v1 import recommender_pb2 as pb
from lmrec.v1 import recommender_pb2_grpc as pb_grpc

from .bundle import load_bundle
from .encoder_client import TritonTextEncoder
from .recommend import Recommendation, RecommendQuery, Recommender, RequestError, ServingConfig
from .store import make_user_store

log = logging.getLogger("lmrec.gateway")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    build_dir: Path
    triton_url: str
    host: str = "127.0.0.1"
    port: int = 50051
    bundle_version: int | None = None  # latest complete bundle when None
    retriever: str = "hnsw"
    user_store: str = "memory"
    serving: ServingConfig = field(default_factory=ServingConfig)


def _to_proto(result: Recommendation, titles) -> list[pb.RecommendedItem]:
    return [
        pb.RecommendedItem(
            item_id=titles.item_ids[item.item],
            title=titles.items[item.item].title,
            score=item.score,
            signals=[pb.SignalScore(signal=name, score=value) for name, value in item.signals.items()],
            found_by=item.found_by,
        )
        for item in result.items
    ]


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 0.0)

    async def _fail(self, context, error: RequestError):
        await context.abort(getattr(grpc.StatusCode, error.code), error.message)

    async def Recommend(self, request: pb.RecommendRequest, context) -> pb.RecommendResponse:
        query = RecommendQuery(user_id=request.user_id, recent_item_ids=tuple(request.recent_item_ids),
                               text=request.text, k=request.k, include_seen=request.include_seen)
        try:
            result = await self.recommender.recommend(query, timeout_s=self._timeout(context))
        except RequestError as error:
            await self._fail(context, error)
        return pb.RecommendResponse(items=_to_proto(result, self.recommender.bundle.dataset),
                                    bundle_version=result.bundle_version, profile_text=result.profile_text,
                                    degraded=result.degraded)

    async def SimilarItems(self, request: pb.SimilarItemsRequest, context) -> pb.SimilarItemsResponse:
        try:
            result = await self.recommender.similar(item_id=request.item_id, text=request.text, k=request.k,
                                                    timeout_s=self._timeout(context))
        except RequestError as error:
            await self._fail(context, error)
        return pb.SimilarItemsResponse(items=_to_proto(result, self.recommender.bundle.dataset),
                                       bundle_version=result.bundle_version)


async def start_gateway(config: GatewayConfig) -> tuple[grpc.aio.Server, int, TritonTextEncoder]:
    bundle = load_bundle(config.build_dir, config.bundle_version, retriever=config.retriever)
    store = make_user_store(config.user_store, bundle.dataset)
    encoder = TritonTextEncoder(config.triton_url)
    recommender = Recommender(bundle, store, encoder, config.serving)
    server = grpc.aio.server()
    pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(recommender), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway serving bundle %s on %s:%d (Triton at %s)", bundle.label, config.host, port, config.triton_url)
    return server, port, encoder


async def run_gateway(config: GatewayConfig, *, on_ready=None, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then drain for up to 5 s and close."""
    server, port, encoder = await start_gateway(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if on_ready:
        on_ready(port)
    await stop.wait()
    await server.stop(grace=5)
    await encoder.close()


def serve_gateway(config: GatewayConfig, *, on_ready=None) -> None:
    asyncio.run(run_gateway(config, on_ready=on_ready))
