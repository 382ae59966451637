"""The ideal-queue reference the gateway report sets beside its open-loop tail ratios."""

from __future__ import annotations

import pytest

from lmrec.benchmarks.gateway_stats import bar_checks, ideal_queue_tail_ratio


def test_an_ideal_single_server_under_poisson_arrivals_still_has_a_tail():
    # M/D/1 at 70% load: waiting time alone makes p99 several times p50 (about 4.3).
    ratio = ideal_queue_tail_ratio(0.7, 1)
    assert 3.8 < ratio < 4.8


def test_more_servers_shorten_the_tail_and_the_result_is_reproducible():
    one, two, four = (ideal_queue_tail_ratio(0.7, c, n=50_000) for c in (1, 2, 4))
    assert one > two > four > 1.0
    assert ideal_queue_tail_ratio(0.7, 2, n=50_000) == two


@pytest.mark.parametrize("load", [1.0, 1.5])
def test_at_or_past_capacity_there_is_no_steady_state_ratio(load):
    assert ideal_queue_tail_ratio(load) is None


@pytest.mark.parametrize("load", [0.0, -0.5])
def test_a_load_that_is_not_positive_is_refused(load):
    with pytest.raises(ValueError, match=f"load must be positive, got {load}"):
        ideal_queue_tail_ratio(load)


def test_the_tail_bar_of_an_overloaded_cell_has_no_ideal_reference_and_does_not_fail():
    from lmrec.benchmarks.gateway_stats import bar_checks

    cell = {"mode": "open", "path": "lmrec", "population": "cached", "share": 1.2, "rate_rps": 300.0,
            "p50_ms": 10.0, "p99_ms": 90.0, "n_errors": 0}
    bar = bar_checks({"config": {"arrivals": "poisson"}, "records": [cell]})[0]
    assert bar["value"] == 9.0 and bar["met"] is False
    assert bar["ideal_md1"] is None


def test_the_tail_bar_is_not_met_by_a_cell_whose_queue_grew():
    """A 70% cell above what the gateway sustains open-loop: p50 104 ms against 2.6 ms at one in flight. Its
    p99/p50 (1.7) was small because every request waited, and the report had called the bar met."""
    from lmrec.benchmarks.gateway_report import _bar_note
    from lmrec.benchmarks.gateway_stats import bar_checks

    alone = {"mode": "closed", "path": "lmrec", "population": "cached", "concurrency": 1, "p50_ms": 2.6,
             "p99_ms": 4.2, "n_errors": 0}
    grew = {"mode": "open", "path": "lmrec", "population": "cached", "share": 0.7, "rate_rps": 373.9,
            "p50_ms": 104.4, "p99_ms": 177.4, "n_errors": 0}
    bar = bar_checks({"config": {"arrivals": "poisson"}, "records": [alone, grew]})[0]
    assert bar["value"] == pytest.approx(1.70, abs=0.01) and bar["met"] is False
    assert "fell behind: p50 104.4 ms is 40× the one-in-flight p50 (2.6 ms)" in _bar_note(bar)
    kept_up = {**grew, "p50_ms": 9.0, "p99_ms": 25.0}
    assert bar_checks({"config": {"arrivals": "poisson"}, "records": [alone, kept_up]})[0]["met"] is True


def test_the_tail_bar_names_its_no_op_control_and_a_control_without_answers_is_said_so():
    from lmrec.benchmarks.gateway_report import _bar_note, _no_op_cell
    from lmrec.benchmarks.gateway_stats import bar_checks

    cell = {"mode": "open", "path": "lmrec", "population": "cached", "share": 0.7, "rate_rps": 500.0,
            "p50_ms": 3.0, "p99_ms": 30.0, "n_errors": 0,
            "no_op_rpc": {"requests": 2000, "n_errors": 2, "p50_ms": 1.5, "p95_ms": 9.0, "p99_ms": 45.0,
                          "p99_over_p50": 30.0, "max_send_lag_ms": 12.5}}
    note = _bar_note(bar_checks({"config": {"arrivals": "poisson"}, "records": [cell]})[0])
    assert "a no-op RPC (Health.Check) under the same arrivals: 30.00 (p50 1.5 ms, p99 45.0 ms, errors 2, " \
           "send lag up to 12.5 ms)" in note
    assert _no_op_cell(cell["no_op_rpc"]) == "1.5 / 45.0, 30.00, 12.5, 2 errors"
    failed = {**cell, "no_op_rpc": {"requests": 2000, "n_errors": 2000, "p50_ms": None, "p95_ms": None,
                                    "p99_ms": None, "p99_over_p50": None, "max_send_lag_ms": 3.0}}
    assert "the no-op RPC control got no answers (2000 errors)" in _bar_note(
        bar_checks({"config": {"arrivals": "poisson"}, "records": [failed]})[0])
    assert _no_op_cell(failed["no_op_rpc"]) == "no answers (2000 errors)" and _no_op_cell(None) == "–"


def _closed_cell(population: str, p50_ms: float) -> dict:
    return {"mode": "closed", "path": "lmrec", "population": population, "concurrency": 1, "p50_ms": p50_ms}


def test_bar_4b_is_judged_on_the_paired_figures_and_shows_the_cell_ratio_beside_them():
    parts = {"encode": {"median_ms": 8.0}, "index_query": {"median_ms": 0.1}, "ranker": {"median_ms": 0.9},
             "grpc_health_rtt": {"median_ms": 0.3}}
    paired = {"uncached": {"recommend_ms": 12.0, "parts_ms": {"encode": 7.0, "index_query": 0.1, "ranker": 0.9},
                           "sum_parts_ms": 8.0, "ratio": 1.5, "n": 200}}
    records = [_closed_cell("uncached", 18.0), _closed_cell("cached", 1.0)]
    bars = {b["bar"].split(":")[0]: b for b in bar_checks({"records": records, "parts": parts, "paired": paired})}
    uncached = bars["one request in flight (uncached)"]
    assert uncached["paired"] and uncached["value"] == 1.5 and uncached["met"]
    assert uncached["cell_ratio"] == 18.0 / 9.0 and "ranker" in uncached["bar"]
    assert uncached["without_index_query"] == 12.0 / 7.9  # the fused path makes no index query
    # A population without paired figures (a result file from before them) keeps the cell against the block.
    cached = bars["one request in flight (cached)"]
    assert not cached["paired"] and cached["value"] == 1.0 / 1.0 and cached["met"]
    assert "cell_ratio" not in cached and cached["without_index_query"] == 1.0 / 0.9
