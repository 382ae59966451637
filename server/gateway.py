"""The ranking gateway: a grpc.aio server for `lmrec.v1.Recommender`, `lmrec.v1.Admin` and `grpc.health.v1`.

Entry point: `serve_gateway(config)` (blocks) or `start_gateway(config)` (returns the running parts).
Run standalone against a running Triton with `lmrec gateway --build-dir DIR --triton-url HOST:PORT`.
The servicers only translate messages; request semantics live in recommend.py, redeploys in deploy.py.
This file also wires the process: `start_gateway` loads the bundle, checks Triton, opens the event store,
pins the model versions, prepares the serving state, starts the metrics server and the model watcher,
and binds the port (`GatewayConfig` holds its settings, `run_gateway` the signal handling).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lmrec.v1 import recommender_pb2 as pb
from lmrec.v1 import recommender_pb2_grpc as pb_grpc

from .bundle import complete_versions, load_bundle
from .catalogue import item_info_of
from .deploy import Deployer, encode_with, keep_models_loaded, pin_models, served_models
from .encoder_client import TritonTextEncoder
from .event_store import Event, EventStoreError, open_event_store
from .metrics import GatewayMetrics, new_request_id
from .model_control import TritonModelControl, TritonUnreachable
from .recommend import Recommender, ServingConfig
from .requests import Recommendation, RecommendQuery, RequestError
from .state import prepare_state

log = logging.getLogger("lmrec.gateway")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Admin"].full_name
DEFAULT_TIMEOUT_S = 5.0
STATUS_CHECK_TIMEOUT_S = 1.0  # GetStatus's readiness check of the served model versions
SERVER_OPTIONS = [
    # gRPC's default lets a second process bind the same port and take half the connections: a second
    # gateway started by mistake would then answer from its own catalogue. Refuse the port instead.
    ("grpc.so_reuseport", 0),
    # An AddItems of MAX_BATCH items with long descriptions exceeds gRPC's 4 MB default, and the caller
    # would get RESOURCE_EXHAUSTED instead of the per-field checks (descriptions are capped too).
    ("grpc.max_receive_message_length", 32 << 20),
]
# AddItems without a client deadline: up to 1000 items to encode (several seconds on two cores).
ADD_ITEMS_TIMEOUT_S = 120.0
STATE_DIR = "gateway_state"


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    build_dir: Path
    triton_url: str
    host: str = "127.0.0.1"
    port: int = 50051
    bundle_version: int | None = None  # latest complete bundle when None
    retriever: str = "hnsw"
    event_store: str = "sqlite"
    state_dir: Path | None = None  # where events and added items live; <build_dir>/gateway_state by default
    metrics_port: int | None = None  # serve Prometheus /metrics here (0: a free port); None: off
    serving: ServingConfig = field(default_factory=ServingConfig)
    # numpy's BLAS threads in this process while the gateway serves (None: leave them); closing the
    # gateway restores them. In-process (server/serve.py running_stack) the cap holds for the caller's
    # numpy too, and two gateways in one process must close in reverse order to restore exactly.
    # Why one: OpenBLAS starts a thread per core, and after each call they spin waiting for the next.
    # On the 2-core machine that burnt a core while a request awaited Triton, and the encoder, using
    # both cores, took 26 ms instead of 8 (uncached Recommend 33.5 ms, 15.8 ms with one thread). The
    # gateway's products are small: one thread loses nothing.
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.blas_threads is not None and self.blas_threads < 1:
            raise ValueError(f"blas_threads must be at least 1 (or None to leave BLAS alone), got {self.blas_threads}")


def _items_to_proto(result: Recommendation) -> list[pb.RecommendedItem]:
    items = []
    for position, item in enumerate(result.items):
        message = pb.RecommendedItem(
            item_id=result.item_ids[position], title=result.titles[position], score=item.score,
            signals=[pb.SignalScore(signal=name, score=value) for name, value in item.signals.items()],
            found_by=item.found_by)
        if result.explanations:
            why = result.explanations[position]
            message.explanation.CopyFrom(pb.Explanation(
                because_item_id=why.because_item_id, because_title=why.because_title,
                because_similarity=why.because_similarity, matched_tags=list(why.matched_tags),
                graph_path=why.graph_path, text=why.text))
        items.append(message)
    return items


def _recommend_response(result: Recommendation, request_id: str) -> pb.RecommendResponse:
    """The response to `result`, its message built once per answer: an answer served again from the
    recommender's cache is copied (microseconds), not built again from its items (0.2 ms for 10). The
    first response is kept as built (gRPC only serializes it); later ones copy it and set their own id."""
    built = result.encoded.get(pb.RecommendResponse)
    if built is None:
        built = result.encoded[pb.RecommendResponse] = pb.RecommendResponse(
            items=_items_to_proto(result), bundle_version=result.bundle_version, profile_text=result.profile_text,
            degraded=result.degraded, request_id=request_id, notes=list(result.notes))
        return built
    response = pb.RecommendResponse()
    response.CopyFrom(built)
    response.request_id = request_id
    return response


def _rpc(method: str):
    """Request id, per-method status counts, total latency, and RequestError → gRPC status, for one handler."""
    def wrap(handler):
        @functools.wraps(handler)
        async def run(self, request, context):
            metadata = dict(context.invocation_metadata() or ())
            request_id = new_request_id(metadata.get("x-request-id"))
            code = "OK"
            try:
                with self.metrics.time_stage(method, "total"):
                    return await handler(self, request, context, request_id)
            except RequestError as error:
                code = error.code
                log.info("%s failed: %s", method, error.message, extra={"fields": {"code": code}})
                await context.abort(getattr(grpc.StatusCode, error.code), error.message)
            except EventStoreError as error:  # the disk, not the request: the caller may retry
                code = "UNAVAILABLE"
                log.error("%s: %s", method, error)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the event store failed ({error}); nothing of "
                                                                 "this call was applied, retry later")
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("%s failed unexpectedly", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            finally:
                self.metrics.count_request(method, code)
        return run
    return wrap


def _timeout(context, default: float = DEFAULT_TIMEOUT_S) -> float:
    remaining = context.time_remaining()
    return default if remaining is None else max(remaining, 0.0)


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.metrics = recommender.metrics

    @_rpc("Recommend")
    async def Recommend(self, request: pb.RecommendRequest, context, request_id: str) -> pb.RecommendResponse:
        query = RecommendQuery(user_id=request.user_id, recent_item_ids=tuple(request.recent_item_ids),
                               text=request.text, k=request.k, include_seen=request.include_seen,
                               attributes=dict(request.attributes),
                               exclude_item_ids=tuple(request.exclude_item_ids),
                               require=tuple((f.key, tuple(f.values)) for f in request.require))
        result = await self.recommender.recommend(query, timeout_s=_timeout(context))
        return _recommend_response(result, request_id)

    @_rpc("SimilarItems")
    async def SimilarItems(self, request: pb.SimilarItemsRequest, context, request_id) -> pb.SimilarItemsResponse:
        result = await self.recommender.similar(item_id=request.item_id, text=request.text, k=request.k,
                                                timeout_s=_timeout(context))
        return pb.SimilarItemsResponse(items=_items_to_proto(result), bundle_version=result.bundle_version)

    async def _record(self, events) -> pb.RecordEventsResponse:
        # The bundle whose catalogue checks the events: record_events reads the state before its first
        # await, and a deploy finishing during the write must not relabel what was checked.
        label = self.recommender.state.label
        stored = await self.recommender.record_events([
            Event(user_id=e.user_id, item_id=e.item_id, event_type=e.event_type, timestamp=e.timestamp,
                  weight=e.weight if e.HasField("weight") else 1.0) for e in events])
        return pb.RecordEventsResponse(recorded=stored, bundle_version=label)

    @_rpc("RecordEvent")
    async def RecordEvent(self, request: pb.Event, context, request_id) -> pb.RecordEventsResponse:
        return await self._record([request])

    @_rpc("RecordEvents")
    async def RecordEvents(self, request: pb.RecordEventsRequest, context, request_id) -> pb.RecordEventsResponse:
        return await self._record(request.events)

    @_rpc("GetUserProfile")
    async def GetUserProfile(self, request: pb.GetUserProfileRequest, context, request_id) -> pb.UserProfile:
        view = await self.recommender.profile(request.user_id, max_tags=request.max_tags or 5,
                                              max_recent=request.max_recent_items or 10, timeout_s=_timeout(context))
        return pb.UserProfile(user_id=view.user_id, tags=[pb.InterestTag(tag=t, weight=w) for t, w in view.tags],
                              recent_items=[pb.ItemRef(item_id=i, title=t) for i, t in view.recent_items],
                              profile_text=view.profile_text, bundle_version=view.bundle_version,
                              recorded_events=view.recorded_events)

    @_rpc("AddItems")
    async def AddItems(self, request: pb.AddItemsRequest, context, request_id) -> pb.AddItemsResponse:
        items = [(item.item_id, item_info_of({"title": item.title, "categories": list(item.categories),
                                              "description": item.description, "year": item.year or None,
                                              "tags": list(item.tags), "attributes": dict(item.attributes)}))
                 for item in request.items]
        added, replaced, version = await self.recommender.add_items(items, timeout_s=_timeout(context, ADD_ITEMS_TIMEOUT_S))
        return pb.AddItemsResponse(added=added, replaced=replaced, bundle_version=version)

    @_rpc("ForgetUser")
    async def ForgetUser(self, request: pb.ForgetUserRequest, context, request_id) -> pb.ForgetUserResponse:
        deleted, was_known = await self.recommender.forget_user(request.user_id)
        return pb.ForgetUserResponse(events_deleted=deleted, was_known=was_known)


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, recommender: Recommender, deployer: Deployer, encoder: TritonTextEncoder) -> None:
        self.recommender = recommender
        self.deployer = deployer
        self.encoder = encoder
        self.metrics = recommender.metrics

    @_rpc("Deploy")
    async def Deploy(self, request: pb.DeployRequest, context, request_id) -> pb.DeployResponse:
        version, previous, seconds = await self.deployer.deploy(request.version)
        return pb.DeployResponse(bundle_version=version, previous_version=previous, seconds=seconds)

    @_rpc("GetStatus")
    async def GetStatus(self, request: pb.StatusRequest, context, request_id) -> pb.StatusResponse:
        state = self.recommender.state
        return pb.StatusResponse(
            bundle_version=state.label, available_versions=complete_versions(self.deployer.build_dir),
            n_items=len(state.catalogue), added_items=len(state.catalogue) - state.catalogue.n_base,
            recorded_events=await asyncio.to_thread(self.recommender.events.n_events),
            cache_hit_ratio=self.metrics.cache_hit_ratio(), degraded=not await self._models_answer(state))

    async def _models_answer(self, state) -> bool:
        """Whether the serving bundle's models can answer now: no breaker open, and Triton reports each
        version ready (asked here, so a status taken while no request has failed yet still tells)."""
        if not self.encoder.available:
            return False
        try:
            checks = [self.deployer.control.is_ready(model, version)
                      for model, version in served_models(state.bundle).items()]
            return all(await asyncio.wait_for(asyncio.gather(*checks), timeout=STATUS_CHECK_TIMEOUT_S))
        except asyncio.TimeoutError:
            return False


@dataclass
class RunningGateway:
    server: grpc.aio.Server
    port: int
    recommender: Recommender
    encoder: TritonTextEncoder
    control: TritonModelControl
    watcher: asyncio.Task
    metrics_port: int | None = None
    blas_limit: object | None = None  # threadpoolctl's limiter; closing restores the process's BLAS threads

    async def close(self, grace: float = 5.0) -> None:
        try:
            self.watcher.cancel()
            await self.server.stop(grace=grace)
            await self.encoder.close()
            await self.control.close()
            self.recommender.metrics.stop_http_server()
            self.recommender.events.close()
            self.recommender.overlap.shutdown(wait=False, cancel_futures=True)
        finally:
            if self.blas_limit is not None:
                self.blas_limit.restore_original_limits()


def limit_blas_threads(threads: int | None):
    """Cap numpy's BLAS pool for the whole process; the limiter (None if nothing changed) can restore it."""
    if threads is None:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


async def start_gateway(config: GatewayConfig) -> RunningGateway:
    """Everything started here is stopped again when a later step fails (no Triton at the address, a port
    in use): the caller gets the error, not a half-open store or a gRPC server left for the loop to drop."""
    build_dir = Path(config.build_dir)
    bundle = load_bundle(build_dir, config.bundle_version, retriever=config.retriever)
    state_dir = Path(config.state_dir) if config.state_dir else build_dir / STATE_DIR
    metrics = GatewayMetrics()
    events = encoder = control = server = None
    try:
        encoder = TritonTextEncoder(config.triton_url)
        control = TritonModelControl(config.triton_url, build_dir / "model_repository")
        if not await control.is_live():  # else pin_models fails with gRPC's "failed to connect to all addresses"
            raise TritonUnreachable(f"no Triton answers at {config.triton_url}: is it running, and is that its "
                                    "gRPC endpoint (host:port)?")
        events = open_event_store(config.event_store, state_dir / "events.sqlite3")
        await pin_models(control, bundle)
        state = await prepare_state(bundle, events.items(), encode_with(encoder, bundle))
        recommender = Recommender(state, events, encoder, config.serving, metrics=metrics)
        deployer = Deployer(recommender, build_dir, control, retriever=config.retriever)

        metrics_port = None
        if config.metrics_port is not None:  # before the gRPC port is bound: a busy metrics port then
            # leaves nothing listening (a grpc.aio server that bound a port but never started keeps it after stop())
            try:
                metrics_port = metrics.start_http_server(config.metrics_port, config.host)
            except OSError as error:
                raise OSError(f"--metrics-port {config.metrics_port}: cannot serve metrics on {config.host}:"
                              f"{config.metrics_port} ({error.strerror or error})") from None
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(recommender), server)
        pb_grpc.add_AdminServicer_to_server(AdminServicer(recommender, deployer, encoder), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        try:
            port = server.add_insecure_port(f"{config.host}:{config.port}")
        except RuntimeError as error:  # grpc.aio raises where the sync server returned 0
            raise OSError(f"--port {config.port}: cannot listen on {config.host}:{config.port} (in use by another "
                          f"process?): {error}") from None
        if port == 0:
            raise OSError(f"--port {config.port}: cannot listen on {config.host}:{config.port}")
        await server.start()
        for name in ("", SERVICE_NAME, ADMIN_SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await _close_started(server, metrics, encoder, control, events)
        raise
    log.info("gateway serving bundle %s on %s:%d (Triton at %s, metrics port %s)", bundle.label, config.host, port,
             config.triton_url, metrics_port)
    watcher = asyncio.create_task(keep_models_loaded(deployer), name="lmrec-keep-models-loaded")
    blas_limit = limit_blas_threads(config.blas_threads)  # last: a failed start leaves the process as it was
    return RunningGateway(server=server, port=port, recommender=recommender, encoder=encoder, control=control,
                          watcher=watcher, metrics_port=metrics_port, blas_limit=blas_limit)


async def _close_started(server, metrics: GatewayMetrics, encoder, control, events) -> None:
    """Undo a start that failed part way, in reverse order; a failure here must not hide the first one."""
    steps = [None if server is None else lambda: server.stop(None), metrics.stop_http_server,
             None if encoder is None else encoder.close, None if control is None else control.close,
             None if events is None else events.close]
    for step in filter(None, steps):
        try:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - the caller is already raising the error that matters
            log.debug("closing after a failed start", exc_info=True)


async def run_gateway(config: GatewayConfig, *, on_ready=None, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then drain for up to 5 s and close."""
    gateway = await start_gateway(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if on_ready:
        on_ready(gateway.port)
    try:
        await stop.wait()
    finally:
        await gateway.close()


def serve_gateway(config: GatewayConfig, *, on_ready=None) -> None:
    asyncio.run(run_gateway(config, on_ready=on_ready))
