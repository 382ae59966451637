"""Talk to the lmrec gateway over gRPC: `RecommenderClient` (blocking) and `AsyncRecommenderClient`."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lmrec.v1 import recommender_pb2 as pb
from lmrec.v1 import recommender_pb2_grpc as pb_grpc


class ClientError(RuntimeError):
    """A call failed; `code` is the gRPC status name (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _error(error: grpc.RpcError) -> ClientError:
    return ClientError(error.code().name, error.details() or "")


def _values(value) -> list[str]:
    """A field's values as strings: one string (or number) is one value, not a sequence of characters."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, int, float)):
        return [value.decode() if isinstance(value, bytes) else str(value)]
    return [str(v) for v in value]


REQUIRE_FORMS = ("{'genre': 'Comedy'}, [('genre', ['Comedy', 'Drama'])], 'genre=Comedy' or "
                 "['genre=Comedy', 'year=1995']")


def filter_from_text(text: str) -> tuple[str, list[str]]:
    """'genre=Comedy,Drama' → ('genre', ['Comedy', 'Drama']): one filter, its values alternatives. What
    `lmrec recommend --require` and the client's `require='genre=Comedy'` both read; ValueError without a
    key or a value."""
    key, sep, values = text.partition("=")
    wanted = [value.strip() for value in values.split(",") if value.strip()]
    if not sep or not key.strip() or not wanted:
        raise ValueError(f"{text!r}: expected KEY=VALUE[,VALUE...], e.g. genre=Comedy")
    return key.strip(), wanted


def _filters(require) -> list[pb.AttributeFilter]:
    """`require`: a mapping {key: value(s)}, (key, value(s)) pairs, or 'key=value[,value]' texts as on the
    command line, where one key may come twice (each filter must hold: genre=Comedy and genre=Horror asks for
    both). Anything else is a ValueError that shows these forms."""
    if require is None:
        return []
    if hasattr(require, "items"):
        pairs = list(require.items())
    else:
        pairs = []
        for entry in [require] if isinstance(require, str) else require:
            if isinstance(entry, str) and "=" in entry:
                pairs.append(filter_from_text(entry))
            elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                pairs.append(tuple(entry))
            else:
                raise ValueError(f"require entry {entry!r}: give one of {REQUIRE_FORMS}")
    return [pb.AttributeFilter(key=str(key), values=_values(values)) for key, values in pairs]


def _text(value) -> str:
    return "" if value is None else str(value)  # a missing title is no title, not the word "None"


def _id(value) -> str:
    # 0 is an id, not "no id"; None is no id, which the gateway refuses by name, never the user "None"
    # (a forget_user(None) would have deleted that user's events).
    return "" if value is None else str(value)


def _ids(field_name: str, values) -> list[str]:
    ids = []
    for position, value in enumerate(values):
        if value is None:  # str(None) would send the item "None", refused as unknown far from the cause
            raise ValueError(f"{field_name}[{position}] is None: give an item id")
        ids.append(str(value))
    return ids


def _recommend_request(user_id, recent_item_ids, text, k, include_seen, attributes=None, exclude_item_ids=(),
                       require=None) -> pb.RecommendRequest:
    return pb.RecommendRequest(user_id=_id(user_id), recent_item_ids=_ids("recent_item_ids", recent_item_ids),
                               text=text, k=k, include_seen=include_seen,
                               attributes={str(a): str(v) for a, v in (attributes or {}).items()},
                               exclude_item_ids=_ids("exclude_item_ids", exclude_item_ids), require=_filters(require))


def _similar_request(item_id, text, k) -> pb.SimilarItemsRequest:
    if _id(item_id) and text:  # the request holds one of them (a oneof): the text would be dropped unseen
        raise ValueError("SimilarItems takes an item id or a text, not both")
    if _id(item_id):
        return pb.SimilarItemsRequest(item_id=_id(item_id), k=k)
    return pb.SimilarItemsRequest(text=text, k=k)


def event_message(user_id, item_id, event_type: str = "", timestamp: float = 0.0,
                  weight: float | None = None) -> pb.Event:
    event = pb.Event(user_id=_id(user_id), item_id=_id(item_id), event_type=event_type, timestamp=timestamp)
    if weight is not None:
        event.weight = weight
    return event


def _events_request(events) -> pb.RecordEventsRequest:
    """`events`: pb.Event messages or dicts with user_id, item_id[, event_type, timestamp, weight]."""
    return pb.RecordEventsRequest(events=[e if isinstance(e, pb.Event) else event_message(**e) for e in events])


def new_item(item_id, title: str = "", *, categories=(), description: str = "", year: int | None = None, tags=(),
             attributes=None) -> pb.NewItem:
    """A title is optional: a description or tags alone describe an item too."""
    return pb.NewItem(item_id=_id(item_id), title=_text(title), categories=_values(categories),
                      description=_text(description),
                      year=int(year or 0), tags=_values(tags),
                      attributes={str(k): str(v) for k, v in (attributes or {}).items()})


def _items_request(items) -> pb.AddItemsRequest:
    """`items`: pb.NewItem messages or dicts with item_id, title[, categories, description, year, tags, attributes]."""
    return pb.AddItemsRequest(items=[i if isinstance(i, pb.NewItem) else new_item(**i) for i in items])


# Deploys load models and warm up: they get their own, longer default deadline.
DEPLOY_TIMEOUT_S = 300.0


class RecommenderClient:
    """Every lmrec.v1 RPC, blocking. Errors come as `ClientError` with the gRPC status name."""

    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._admin = pb_grpc.AdminStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout_s = timeout_s

    def _call(self, method, request, timeout_s: float | None = None, request_id: str | None = None):
        metadata = (("x-request-id", request_id),) if request_id else None
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            raise _error(error) from None

    def recommend(self, user_id: str | int = "", *, recent_item_ids: Sequence[str | int] = (), text: str = "",
                  k: int = 10, include_seen: bool = False, attributes: dict | None = None,
                  exclude_item_ids: Sequence[str | int] = (), require=None,
                  request_id: str | None = None) -> pb.RecommendResponse:
        return self._call(self._stub.Recommend, _recommend_request(user_id, recent_item_ids, text, k, include_seen,
                                                                   attributes, exclude_item_ids, require),
                          request_id=request_id)

    def similar(self, item_id: str | int = "", *, text: str = "", k: int = 10) -> pb.SimilarItemsResponse:
        return self._call(self._stub.SimilarItems, _similar_request(item_id, text, k))

    def record_event(self, user_id, item_id, *, event_type: str = "", timestamp: float = 0.0,
                     weight: float | None = None) -> pb.RecordEventsResponse:
        return self._call(self._stub.RecordEvent, event_message(user_id, item_id, event_type, timestamp, weight))

    def record_events(self, events) -> pb.RecordEventsResponse:
        return self._call(self._stub.RecordEvents, _events_request(events))

    def profile(self, user_id, *, max_tags: int = 5, max_recent_items: int = 10) -> pb.UserProfile:
        return self._call(self._stub.GetUserProfile, pb.GetUserProfileRequest(
            user_id=_id(user_id), max_tags=max_tags, max_recent_items=max_recent_items))

    def add_items(self, items) -> pb.AddItemsResponse:
        return self._call(self._stub.AddItems, _items_request(items))

    def forget_user(self, user_id) -> pb.ForgetUserResponse:
        return self._call(self._stub.ForgetUser, pb.ForgetUserRequest(user_id=_id(user_id)))

    def deploy(self, version: int, *, timeout_s: float = DEPLOY_TIMEOUT_S) -> pb.DeployResponse:
        return self._call(self._admin.Deploy, pb.DeployRequest(version=version), timeout_s)

    def status(self) -> pb.StatusResponse:
        return self._call(self._admin.GetStatus, pb.StatusRequest())

    def health(self, service: str = "") -> str:
        reply = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRecommenderClient:
    """The same RPCs for asyncio code."""

    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = None  # opened by the first call, in its event loop (an aio channel is bound to one)

    def _connected(self):
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stubs = (pb_grpc.RecommenderStub(self._channel), pb_grpc.AdminStub(self._channel),
                           health_pb2_grpc.HealthStub(self._channel))
        return self._stubs

    @property
    def _stub(self):
        return self._connected()[0]

    @property
    def _admin(self):
        return self._connected()[1]

    @property
    def _health(self):
        return self._connected()[2]

    async def _call(self, method, request, timeout_s: float | None = None, request_id: str | None = None):
        metadata = (("x-request-id", request_id),) if request_id else None
        try:
            return await method(request, timeout=timeout_s or self.timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def recommend(self, user_id: str | int = "", *, recent_item_ids: Sequence[str | int] = (),
                        text: str = "", k: int = 10, include_seen: bool = False, attributes: dict | None = None,
                        exclude_item_ids: Sequence[str | int] = (), require=None,
                        request_id: str | None = None) -> pb.RecommendResponse:
        return await self._call(self._stub.Recommend, _recommend_request(
            user_id, recent_item_ids, text, k, include_seen, attributes, exclude_item_ids, require),
            request_id=request_id)

    async def similar(self, item_id: str | int = "", *, text: str = "", k: int = 10) -> pb.SimilarItemsResponse:
        return await self._call(self._stub.SimilarItems, _similar_request(item_id, text, k))

    async def record_event(self, user_id, item_id, *, event_type: str = "", timestamp: float = 0.0,
                           weight: float | None = None) -> pb.RecordEventsResponse:
        return await self._call(self._stub.RecordEvent, event_message(user_id, item_id, event_type, timestamp, weight))

    async def record_events(self, events) -> pb.RecordEventsResponse:
        return await self._call(self._stub.RecordEvents, _events_request(events))

    async def profile(self, user_id, *, max_tags: int = 5, max_recent_items: int = 10) -> pb.UserProfile:
        return await self._call(self._stub.GetUserProfile, pb.GetUserProfileRequest(
            user_id=_id(user_id), max_tags=max_tags, max_recent_items=max_recent_items))

    async def add_items(self, items) -> pb.AddItemsResponse:
        return await self._call(self._stub.AddItems, _items_request(items))

    async def forget_user(self, user_id) -> pb.ForgetUserResponse:
        return await self._call(self._stub.ForgetUser, pb.ForgetUserRequest(user_id=_id(user_id)))

    async def deploy(self, version: int, *, timeout_s: float = DEPLOY_TIMEOUT_S) -> pb.DeployResponse:
        return await self._call(self._admin.Deploy, pb.DeployRequest(version=version), timeout_s)

    async def status(self) -> pb.StatusResponse:
        return await self._call(self._admin.GetStatus, pb.StatusRequest())

    async def health(self, service: str = "") -> str:
        reply = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> "AsyncRecommenderClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def format_items(response) -> str:
    """A readable table: rank, id, title, score, the signal that found it and every signal's value."""
    # The response does not say which served model failed: the text encoder, or the ranker of a fused bundle.
    degraded = ("  (DEGRADED: a served model was unavailable: the text encoder, or the ranker with a fused bundle; "
                "the answer comes from the fallback)") if getattr(response, "degraded", False) else ""
    lines = [f"bundle {response.bundle_version}{degraded}"]
    lines.append(f"{'#':>3}  {'item':>8}  {'title':<46} {'score':>6}  {'found by':<8} signals")
    for rank, item in enumerate(response.items, 1):
        signals = " ".join(f"{s.signal}={s.score:.2f}" for s in item.signals)
        title = item.title if len(item.title) <= 46 else item.title[:43] + "..."
        lines.append(f"{rank:>3}  {item.item_id:>8}  {title:<46} {item.score:>6.3f}  {item.found_by:<8} {signals}")
        if item.HasField("explanation") and item.explanation.text:
            lines.append(f"{'':>15}why: {item.explanation.text}")
    return "\n".join(lines)


def format_status(status) -> str:
    """Admin.GetStatus as lines a person reads: the bundle and what else can be deployed, the catalogue,
    the events, the cache and whether the gateway is answering from a fallback."""
    deployable = ", ".join(str(v) for v in status.available_versions) or "none"
    added = f" ({status.added_items} added)" if status.added_items else ""
    degraded = ("yes: a breaker is open or Triton is down, answers come from the fallback" if status.degraded
                else "no")
    rows = [("bundle", f"{status.bundle_version} (deployable: {deployable})"),
            ("catalogue", f"{status.n_items:,} items{added}"),
            ("recorded events", f"{status.recorded_events:,}"),
            ("cache hit ratio", f"{status.cache_hit_ratio:.2f}"),
            ("degraded", degraded)]
    return "\n".join(f"{name:<16} {value}" for name, value in rows)
