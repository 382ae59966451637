"""The ideal-queue reference the gateway report sets beside its open-loop tail ratios."""

from __future__ import annotations

import pytest

from lmrec.benchmarks.gateway_stats import ideal_queue_tail_ratio


def test_an_ideal_single_server_under_poisson_arrivals_still_has_a_tail():
    # M/D/1 at 70% load: waiting time alone makes p99 several times p50 (about 4.3).
    ratio = ideal_queue_tail_ratio(0.7, 1)
    assert 3.8 < ratio < 4.8


def test_more_servers_shorten_the_tail_and_the_result_is_reproducible():
    one, two, four = (ideal_queue_tail_ratio(0.7, c, n=50_000) for c in (1, 2, 4))
    assert one > two > four > 1.0
    assert ideal_queue_tail_ratio(0.7, 2, n=50_000) == two


@pytest.mark.parametrize("load", [0.0, 1.0, 1.5])
def test_a_load_outside_the_open_interval_is_refused(load):
    with pytest.raises(ValueError, match=f"load must be in \\(0, 1\\), got {load}"):
        ideal_queue_tail_ratio(load)
