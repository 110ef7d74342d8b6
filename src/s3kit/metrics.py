"""Prometheus metrics for a multiplexer (``pip install 's3kit[prometheus]'``).

``register(mux)`` adds a collector to prometheus-client's registry; it reads the endpoints'
counters when scraped, so the request path pays nothing for it. ``serve(mux, port)`` also starts
prometheus-client's HTTP exporter (on 127.0.0.1 unless told otherwise).

| metric | type | labels |
|---|---|---|
| ``s3kit_requests_total`` | counter | endpoint, operation, outcome |
| ``s3kit_in_flight`` | gauge | endpoint |
| ``s3kit_concurrency_limit`` | gauge | endpoint |
| ``s3kit_breaker_state`` | gauge (0 closed, 1 half-open, 2 open) | endpoint |
| ``s3kit_request_duration_seconds`` | histogram | endpoint |
| ``s3kit_retries_total`` | counter | endpoint |
| ``s3kit_failovers_total`` | counter (failovers away from the endpoint) | endpoint |
| ``s3kit_rejected_total`` | counter (open breaker, saturated) | endpoint, reason |
| ``s3kit_hedges_total`` | counter (hedged reads sent to the endpoint) | endpoint |

``outcome`` is one of ``success``, ``client_error``, ``access_error``, ``bad_credentials``,
``throttle``, ``transient``, ``endpoint_failure``. Requests count attempts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._outcome import ACCESS, BAD_CREDENTIALS, CLIENT, FAILURE, SUCCESS, THROTTLE, TRANSIENT
from ._stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from ._mux import Multiplexer

__all__ = ["S3KitCollector", "register", "serve"]

OUTCOME_LABELS = {
    SUCCESS: "success",
    CLIENT: "client_error",
    ACCESS: "access_error",
    BAD_CREDENTIALS: "bad_credentials",
    THROTTLE: "throttle",
    TRANSIENT: "transient",
    FAILURE: "endpoint_failure",
}
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class S3KitCollector:
    """A prometheus-client collector over one multiplexer's endpoints."""

    def __init__(self, mux: Multiplexer) -> None:
        self.mux = mux

    def describe(self) -> list[Any]:
        return []  # the metric set depends on the endpoints present at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        requests = CounterMetricFamily(
            "s3kit_requests", "Attempts sent, by outcome class",
            labels=["endpoint", "operation", "outcome"],
        )  # fmt: skip
        in_flight = GaugeMetricFamily("s3kit_in_flight", "Requests in flight", labels=["endpoint"])
        limit = GaugeMetricFamily(
            "s3kit_concurrency_limit", "Current (AIMD) concurrency limit", labels=["endpoint"]
        )
        breaker = GaugeMetricFamily(
            "s3kit_breaker_state", "0 closed, 1 half-open, 2 open", labels=["endpoint"]
        )
        duration = HistogramMetricFamily(
            "s3kit_request_duration_seconds", "Attempt duration", labels=["endpoint"]
        )
        retries = CounterMetricFamily("s3kit_retries", "Retries scheduled", labels=["endpoint"])
        failovers = CounterMetricFamily(
            "s3kit_failovers", "Calls that failed over away from the endpoint", labels=["endpoint"]
        )
        rejected = CounterMetricFamily(
            "s3kit_rejected", "Calls refused before sending", labels=["endpoint", "reason"]
        )
        hedges = CounterMetricFamily("s3kit_hedges", "Hedged reads sent", labels=["endpoint"])
        hedged = self.mux.hedges_sent()
        for ep in self.mux.endpoints.values():
            st = ep.stats()
            by_op, buckets, total = ep.metrics_snapshot()
            name = ep.name
            for (operation, outcome), count in sorted(by_op.items()):
                requests.add_metric([name, operation, OUTCOME_LABELS[outcome]], count)
            in_flight.add_metric([name], st.in_flight)
            limit.add_metric([name], st.concurrency_limit)
            breaker.add_metric([name], BREAKER_VALUES[st.state])
            cumulative = []
            running = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            duration.add_metric([name], cumulative, sum_value=total)
            retries.add_metric([name], st.retries)
            failovers.add_metric([name], st.failovers_away)
            rejected.add_metric([name, "open"], st.rejected_open)
            rejected.add_metric([name, "saturated"], st.saturated)
            hedges.add_metric([name], hedged.get(name, 0))
        yield from (requests, in_flight, limit, breaker, duration, retries, failovers, rejected)
        yield hedges


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def register(mux: Multiplexer, registry: Any = None) -> S3KitCollector:
    """Register a collector for ``mux`` (default: prometheus-client's global registry)."""
    from prometheus_client import REGISTRY

    collector = S3KitCollector(mux)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


def serve(mux: Multiplexer, port: int, addr: str = "127.0.0.1", registry: Any = None) -> Any:
    """Register ``mux`` and serve ``/metrics`` on ``addr:port``; returns the HTTP server."""
    from prometheus_client import REGISTRY, start_http_server

    reg = registry if registry is not None else REGISTRY
    register(mux, reg)
    server, _thread = start_http_server(port, addr=addr, registry=reg)
    return server
