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


def _recommend_request(user_id, recent_item_ids, text, k, include_seen) -> pb.RecommendRequest:
    return pb.RecommendRequest(user_id=str(user_id or ""), recent_item_ids=[str(i) for i in recent_item_ids],
                               text=text, k=k, include_seen=include_seen)


def _similar_request(item_id, text, k) -> pb.SimilarItemsRequest:
    if item_id:
        return pb.SimilarItemsRequest(item_id=str(item_id), k=k)
    return pb.SimilarItemsRequest(text=text, k=k)


class RecommenderClient:
    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout_s = timeout_s

    def recommend(self, user_id: str | int = "", *, recent_item_ids: Sequence[str | int] = (), text: str = "",
                  k: int = 10, include_seen: bool = False) -> pb.RecommendResponse:
        try:
            return self._stub.Recommend(_recommend_request(user_id, recent_item_ids, text, k, include_seen),
                                        timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None

    def similar(self, item_id: str | int = "", *, text: str = "", k: int = 10) -> pb.SimilarItemsResponse:
        try:
            return self._stub.SimilarItems(_similar_request(item_id, text, k), timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None

    def health(self, service: str = "") -> str:
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRecommenderClient:
    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout_s = timeout_s

    async def recommend(self, user_id: str | int = "", *, recent_item_ids: Sequence[str | int] = (),
                        text: str = "", k: int = 10, include_seen: bool = False) -> pb.RecommendResponse:
        try:
            return await self._stub.Recommend(_recommend_request(user_id, recent_item_ids, text, k, include_seen),
                                              timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def similar(self, item_id: str | int = "", *, text: str = "", k: int = 10) -> pb.SimilarItemsResponse:
        try:
            return await self._stub.SimilarItems(_similar_request(item_id, text, k), timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def health(self, service: str = "") -> str:
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise _error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncRecommenderClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def format_items(response) -> str:
    """A readable table: rank, id, title, score, the signal that found it and every signal's share."""
    lines = [f"bundle {response.bundle_version}" + ("  (DEGRADED: text encoder unavailable)"
                                                    if getattr(response, "degraded", False) else "")]
    lines.append(f"{'#':>3}  {'item':>8}  {'title':<46} {'score':>6}  {'found by':<8} signals")
    for rank, item in enumerate(response.items, 1):
        signals = " ".join(f"{s.signal}={s.score:.2f}" for s in item.signals)
        title = item.title if len(item.title) <= 46 else item.title[:43] + "..."
        lines.append(f"{rank:>3}  {item.item_id:>8}  {title:<46} {item.score:>6.3f}  {item.found_by:<8} {signals}")
    return "\n".join(lines)
