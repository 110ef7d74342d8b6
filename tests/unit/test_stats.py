"""LatencyWindow: EWMA and nearest-rank percentiles over a ring of samples."""

from __future__ import annotations

import pytest

from s3kit._stats import EndpointStats, LatencyWindow


def window(samples: list[float], size: int = 1024) -> LatencyWindow:
    w = LatencyWindow(size)
    for s in samples:
        w.add(s)
    return w


def test_empty_window_reports_zeros() -> None:
    w = LatencyWindow()
    assert w.percentiles(0.5, 0.95, 0.99) == [0.0, 0.0, 0.0]
    assert w.ewma == 0.0


def test_single_sample_is_every_percentile() -> None:
    w = window([0.3])
    assert w.percentiles(0.0, 0.5, 0.99, 1.0) == [0.3, 0.3, 0.3, 0.3]
    assert w.ewma == 0.3


def test_ewma_seeds_with_first_sample_then_alpha_0_2() -> None:
    w = window([1.0])
    assert w.ewma == pytest.approx(1.0)
    w.add(2.0)
    assert w.ewma == pytest.approx(1.2)
    w.add(2.0)
    assert w.ewma == pytest.approx(1.36)
    w.add(0.36)
    assert w.ewma == pytest.approx(1.36 + 0.2 * (0.36 - 1.36))


def test_ewma_converges_towards_a_steady_value() -> None:
    w = window([10.0] + [1.0] * 60)
    assert w.ewma == pytest.approx(1.0, abs=1e-4)


def test_percentiles_extremes_and_median() -> None:
    w = window([float(i) for i in range(100, 0, -1)])  # order of arrival does not matter
    p0, p50, p100 = w.percentiles(0.0, 0.5, 1.0)
    assert p0 == 1.0
    assert p50 == 50.0
    assert p100 == 100.0


def test_percentiles_are_monotonic_in_q() -> None:
    w = window([0.01 * ((i * 37) % 101) for i in range(500)])
    qs = [i / 20 for i in range(21)]
    values = w.percentiles(*qs)
    assert values == sorted(values)


def test_percentile_non_integer_rank_rounds_up() -> None:
    w = window([1.0, 2.0, 3.0, 4.0, 5.0])
    # nearest rank: ceil(q·n)-th smallest
    assert w.percentiles(0.5, 0.9, 0.1) == [3.0, 5.0, 1.0]


def test_nearest_rank_percentiles_of_1_to_100() -> None:
    w = window([float(i) for i in range(1, 101)])
    assert w.percentiles(0.5, 0.95, 0.99) == [50.0, 95.0, 99.0]


def test_nearest_rank_median_of_six() -> None:
    w = window([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert w.percentiles(0.5) == [3.0]


def test_ring_keeps_only_the_last_size_samples() -> None:
    w = window([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], size=4)
    assert w.percentiles(0.0, 1.0) == [4.0, 7.0]
    w.add(0.5)  # overwrites the oldest remaining (4.0)
    assert w.percentiles(0.0, 1.0) == [0.5, 7.0]
    w.add(8.0)
    w.add(9.0)
    w.add(10.0)  # 5, 6 and 7 leave; the last four are 0.5, 8, 9, 10
    assert w.percentiles(0.0, 1.0) == [0.5, 10.0]


def test_ewma_after_a_zero_sample() -> None:
    w = window([0.0, 1.0])
    assert w.ewma == pytest.approx(0.2)


def test_endpoint_stats_as_dict() -> None:
    stats = EndpointStats(
        name="a",
        url="http://h",
        state="closed",
        requests=3,
        in_flight=0,
        successes=2,
        client_errors=1,
        access_errors=0,
        throttles=0,
        endpoint_failures=0,
        retries=0,
        failovers_away=0,
        rejected_open=0,
        saturated=0,
        concurrency_limit=5,
        max_concurrent=5,
        misconfigured=False,
        latency_ewma_ms=1.0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
    )
    d = stats.as_dict()
    assert d["name"] == "a"
    assert d["requests"] == d["successes"] + d["client_errors"]
    assert d["p99_ms"] == 3.0
    assert len(d) == 21


def test_routing_cost_clips_tail_answers_follows_lasting_change_and_decays_while_idle() -> None:
    from s3kit._stats import COST_DECAY_S, LatencyWindow

    w = LatencyWindow()
    w.add(0.010, 100.0)
    assert w.routing_cost(100.0) == pytest.approx(0.010)
    w.add(0.200, 100.01)  # one tail answer counts as 3x the cost at most: +40 %
    assert w.routing_cost(100.01) == pytest.approx(0.014)
    for i in range(8):  # an endpoint that stays 20x slower gets there in a few answers
        w.add(0.200, 100.02 + i * 0.01)
    assert w.routing_cost(100.09) > 0.100
    # without samples the cost fades, so a once-slow endpoint is tried again later
    cost = w.routing_cost(100.09)
    assert w.routing_cost(100.09 + COST_DECAY_S) == pytest.approx(cost * 0.36788, rel=1e-3)
    assert w.routing_cost(100.09 + 10 * COST_DECAY_S) < 0.0001
