"""The gateway's process settings: its BLAS thread cap (see GatewayConfig.blas_threads) and its server options."""

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from lmrec.server.gateway import GatewayConfig, limit_blas_threads


def _blas_threads() -> list[int]:
    np.dot(np.ones((4, 4)), np.ones((4, 4)))  # numpy's BLAS is loaded
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_the_cap_applies_to_the_process_and_closing_restores_it():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # a known starting point, whatever the machine
        before = _blas_threads()
        assert before and set(before) == {2}, "numpy has no BLAS pool to cap"
        limiter = limit_blas_threads(1)
        try:
            assert _blas_threads() == [1] * len(before)
        finally:
            limiter.restore_original_limits()
        assert _blas_threads() == before


def test_none_leaves_blas_alone():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        assert limit_blas_threads(None) is None
        assert set(_blas_threads()) == {2}


def test_a_cap_below_one_is_refused_with_the_value():
    with pytest.raises(ValueError, match="blas_threads must be at least 1.*got 0"):
        GatewayConfig(build_dir=Path("."), triton_url="127.0.0.1:1", blas_threads=0)


def test_a_second_server_with_the_gateways_options_cannot_bind_a_port_in_use():
    """gRPC lets two processes share a port by default (SO_REUSEPORT); the gateway's options refuse it, so a
    second gateway started by mistake fails instead of taking half the connections."""
    import asyncio

    import grpc

    from lmrec.server.gateway import SERVER_OPTIONS

    async def bind_twice():
        first = grpc.aio.server(options=SERVER_OPTIONS)
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        try:
            second = grpc.aio.server(options=SERVER_OPTIONS)
            with pytest.raises(RuntimeError):
                second.add_insecure_port(f"127.0.0.1:{port}")
        finally:
            await first.stop(None)

    asyncio.run(bind_twice())
    assert dict(SERVER_OPTIONS)["grpc.max_receive_message_length"] >= 16 << 20  # a full AddItems batch fits


def test_record_events_answers_with_the_bundle_that_checked_the_events_even_if_a_deploy_lands_meanwhile():
    import asyncio
    from types import SimpleNamespace

    from lmrec.server.gateway import RecommenderServicer
    from lmrec.v1 import recommender_pb2 as pb

    class Recommender:
        state = SimpleNamespace(label="v1")
        metrics = None

        async def record_events(self, events):
            await asyncio.sleep(0)
            Recommender.state = SimpleNamespace(label="v2")  # a deploy swapped the state during the write
            return len(events)

    servicer = RecommenderServicer(Recommender())
    answer = asyncio.run(servicer._record([pb.Event(user_id="u", item_id="i")]))
    assert answer.recorded == 1 and answer.bundle_version == "v1"


def test_an_answer_served_twice_is_encoded_once_and_each_response_keeps_its_own_request_id():
    from lmrec.server.explain import ItemExplanation
    from lmrec.server.fusion import RankedItem
    from lmrec.server.gateway import _recommend_response
    from lmrec.server.requests import Recommendation

    answer = Recommendation(items=[RankedItem(item=3, score=0.5, signals={"lm": 0.5}, found_by="lm")],
                            bundle_version="2", titles=["Toy Story"], item_ids=["i3"], profile_text="liked: Heat",
                            explanations=[ItemExplanation(because_item=7, text="because you liked Heat")])
    first = _recommend_response(answer, "req-1")
    second = _recommend_response(answer, "req-2")
    assert (first.request_id, second.request_id) == ("req-1", "req-2")  # the second did not edit the first
    assert first.items[0].item_id == "i3" and first.items[0].explanation.text == "because you liked Heat"
    second.request_id = first.request_id
    assert second == first and len(answer.encoded) == 1
    empty = Recommendation(items=[], bundle_version="2", notes=["no item has genre = 'Westerns'; closest: Western"])
    assert list(_recommend_response(empty, "req-3").notes) == ["no item has genre = 'Westerns'; closest: Western"]
