"""The overlap pool: its threads run at the niceness asked for; the process's other threads keep theirs."""

from __future__ import annotations

import os

import pytest

from lmrec.server.overlap import LOWEST_PRIORITY, low_priority_executor
from lmrec.server.recommend import ServingConfig


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: the calling thread's


def test_the_pool_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own():
    before = _own_niceness()
    with low_priority_executor() as pool:
        assert pool.submit(_own_niceness).result() == LOWEST_PRIORITY == 19
    assert _own_niceness() == before


def test_a_niceness_the_process_may_not_take_leaves_the_threads_at_their_own(caplog):
    if os.geteuid() == 0:  # root may raise a thread's priority: the refusal cannot be provoked
        with low_priority_executor(niceness=-5) as pool:
            assert pool.submit(_own_niceness).result() == -5
        return
    with low_priority_executor(niceness=-5) as pool:
        assert pool.submit(_own_niceness).result() == _own_niceness()
    assert "niceness -5 refused" in caplog.text


@pytest.mark.parametrize("niceness", [-21, 20])
def test_serving_config_names_a_niceness_outside_linux_range(niceness):
    with pytest.raises(ValueError, match=f"overlap_niceness is a Linux nice value from -20 to 19, got {niceness}"):
        ServingConfig(overlap_niceness=niceness)
