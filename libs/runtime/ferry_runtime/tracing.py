"""OpenTelemetry for a service: its own tracer provider, exporter chosen by config.

No global provider is installed, so several services (or tests) can live in one process,
each with its own :class:`Telemetry`.  Context crosses process boundaries as W3C
``traceparent`` in HTTP and NATS headers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .config import HostSettings, TracingSettings


class Telemetry:
    """A tracer for one service instance, and the propagator for its headers."""

    def __init__(
        self,
        service: str,
        host: HostSettings,
        settings: TracingSettings,
        exporter: SpanExporter | None = None,
    ) -> None:
        resource = Resource.create({"service.name": service, "host.name": host.name})
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
        )
        if exporter is not None:  # tests hand in an in-memory exporter
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif settings.exporter == "console":
            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif settings.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.otlp_endpoint
            otlp = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
            self.provider.add_span_processor(BatchSpanProcessor(otlp))
        self.tracer = self.provider.get_tracer("ferry")
        self._propagator = TraceContextTextMapPropagator()

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the current span's context into ``headers`` (``traceparent``)."""
        self._propagator.inject(headers)

    def extract(self, headers: Mapping[str, str] | None) -> otel_context.Context:
        return self._propagator.extract(dict(headers or {}))

    @contextmanager
    def span(
        self,
        name: str,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        parent_headers: Mapping[str, str] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[trace.Span]:
        """A span, optionally continuing the trace carried in ``parent_headers``."""
        ctx = self.extract(parent_headers) if parent_headers is not None else None
        with self.tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes) as span:
            yield span

    def shutdown(self) -> None:
        self.provider.shutdown()
