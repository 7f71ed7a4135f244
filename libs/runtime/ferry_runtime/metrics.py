"""Prometheus metrics for a service: one registry per service instance, no globals."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    """Metrics every service has: HTTP requests, NATS requests handled, bus connection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "ferry_http_requests_total",
            "HTTP requests served, by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "ferry_http_request_duration_seconds",
            "HTTP request latency, by method and route",
            ["method", "route"],
            registry=registry,
        )
        self.nats_handled = Counter(
            "ferry_nats_requests_handled_total",
            "NATS requests answered, by subject pattern and outcome",
            ["subject", "outcome"],
            registry=registry,
        )
        self.nats_connected = Gauge("ferry_nats_connected", "1 while connected to NATS", registry=registry)
        self.nats_reconnects = Counter("ferry_nats_reconnects_total", "NATS reconnections", registry=registry)
