"""The deployer's warm-up: a degraded answer is retried within its budget, then refused."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from lmrec.server.deploy import Deployer
from lmrec.server.requests import RequestError


class _Recommender:
    """Answers degraded `degraded_answers` times, then in full (a stand-in for the real one)."""

    def __init__(self, degraded_answers: int) -> None:
        self.encoder = SimpleNamespace(retry_after_s=0.01)
        self.remaining = degraded_answers
        self.calls = 0

    async def _recommend(self, state, query, timeout_s):
        self.calls += 1
        self.remaining -= 1
        return SimpleNamespace(degraded=self.remaining >= 0)


def _state():
    return SimpleNamespace(catalogue=SimpleNamespace(item_ids=("i1",)))


def test_a_breaker_left_open_by_old_traffic_does_not_fail_the_warm_up(tmp_path):
    recommender = _Recommender(degraded_answers=3)
    deployer = Deployer(recommender, tmp_path, control=None)
    asyncio.run(deployer._warm_up(_state(), budget_s=5.0))
    assert recommender.calls == 4


def test_a_warm_up_that_stays_degraded_is_refused_within_its_budget(tmp_path):
    recommender = _Recommender(degraded_answers=10_000)
    deployer = Deployer(recommender, tmp_path, control=None)
    with pytest.raises(RequestError, match="degraded mode for 0s"):
        asyncio.run(deployer._warm_up(_state(), budget_s=0.1))
    assert 1 < recommender.calls < 100
