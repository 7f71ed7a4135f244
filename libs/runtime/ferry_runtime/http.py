"""The HTTP side of a service: the app every service builds on.

:func:`create_service_app` returns an aiohttp application that already has

* ``/healthz`` (the process is alive), ``/readyz`` (NATS connected and every readiness
  check of the service passes), ``/metrics`` (the service's own Prometheus registry),
  ``/openapi.json`` (generated from the routes declared through :class:`Api`);
* a span and latency/count metrics for every request, continuing an incoming ``traceparent``;
* errors answered as JSON ``{"status": ..., "error": ..., "message": ...}``;
* the :class:`~ferry_runtime.bus.Bus` as a cleanup context (connect on start, drain on stop)
  and the tracer provider flushed last.

Services add their routes with :meth:`Api.route` and their resources as further
``cleanup_ctx`` entries, which start after the bus and stop before it drains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .bus import Bus
from .config import ServiceSettings
from .metrics import RuntimeMetrics
from .tracing import Telemetry

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", ServiceSettings)
TELEMETRY = web.AppKey("telemetry", Telemetry)
METRICS = web.AppKey("metrics", RuntimeMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
BUS = web.AppKey("bus", Bus)

ReadinessCheck = Callable[[], tuple[bool, str]]
READINESS = web.AppKey("readiness", list[tuple[str, ReadinessCheck]])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A documented query or path parameter."""

    name: str
    description: str
    location: str = "query"
    required: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    params: Sequence[Param]
    errors: Sequence[int]


class Api:
    """The service's JSON API: routes and the OpenAPI document describing them."""

    def __init__(self, title: str, version: str, description: str = "") -> None:
        self.title = title
        self.version = version
        self.description = description
        self._routes: list[_Route] = []

    def route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        summary: str,
        response: type[BaseModel] | None = None,
        params: Sequence[Param] = (),
        errors: Sequence[int] = (),
    ) -> None:
        self._routes.append(_Route(method.upper(), path, handler, summary, response, params, errors))

    def install(self, app: web.Application) -> None:
        for r in self._routes:
            app.router.add_route(r.method, r.path, r.handler)

    def document(self) -> dict[str, Any]:
        models = {r.response for r in self._routes if r.response is not None} | {ErrorBody}
        _, defs = models_json_schema(
            [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
            ref_template="#/components/schemas/{model}",
        )
        paths: dict[str, Any] = {}
        for r in self._routes:
            responses: dict[str, Any] = {"200": {"description": "OK"}}
            if r.response is not None:
                responses["200"]["content"] = {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{r.response.__name__}"}}
                }
            for status in r.errors:
                responses[str(status)] = {
                    "description": "error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
            op: dict[str, Any] = {"summary": r.summary, "responses": responses}
            if r.params:
                op["parameters"] = [
                    {
                        "name": p.name,
                        "in": p.location,
                        "required": p.required or p.location == "path",
                        "description": p.description,
                        "schema": p.schema,
                    }
                    for p in r.params
                ]
            paths.setdefault(r.path, {})[r.method.lower()] = op
        for path, summary in _BUILTIN_PATHS.items():
            paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
        paths["/readyz"]["get"]["responses"]["503"] = {"description": "not ready"}
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "paths": paths,
            "components": {"schemas": defs.get("$defs", {})},
        }


_BUILTIN_PATHS = {
    "/healthz": "the process is alive",
    "/readyz": "ready to serve: NATS connected and the service's dependencies up",
    "/metrics": "Prometheus metrics",
    "/openapi.json": "this document",
}


class ErrorBody(BaseModel):
    """Every HTTP error is answered with this body."""

    status: int
    error: str
    message: str


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = ErrorBody(status=status, error=reason, message=message)
    return json_model(body, status=status)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Span + metrics + JSON errors for every request."""
    telemetry = request.app[TELEMETRY]
    metrics = request.app[METRICS]
    route = _route_name(request)
    started = time.monotonic()
    with telemetry.span(
        f"{request.method} {route}",
        SpanKind.SERVER,
        parent_headers=dict(request.headers),
        attributes={"http.request.method": request.method, "http.route": route, "url.path": request.path},
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            default = f"{exc.status}: {exc.reason}"
            message = (
                exc.text
                if exc.text and exc.text != default
                else f"{exc.reason}: {request.method} {request.path}"
            )
            response = error_response(exc.status, message)
        except Exception as exc:
            log.exception("HTTP handler failed", extra={"route": route})
            span.record_exception(exc)
            response = error_response(500, f"internal error: {type(exc).__name__}")
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    metrics.http_requests.labels(request.method, route, str(response.status)).inc()
    metrics.http_latency.labels(request.method, route).observe(time.monotonic() - started)
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    checks: dict[str, dict[str, Any]] = {}
    for name, check in request.app[READINESS]:
        ok, detail = check()
        checks[name] = {"ok": ok, "detail": detail}
    ready = all(c["ok"] for c in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_service_app(
    settings: ServiceSettings,
    api: Api,
    *,
    span_exporter: SpanExporter | None = None,
) -> web.Application:
    """The base application of a service (see the module docstring)."""
    app = web.Application(middlewares=[_observe])
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry)
    telemetry = Telemetry(type(settings).service_name, settings.host, settings.tracing, span_exporter)
    bus = Bus(settings.nats, f"{type(settings).service_name}@{settings.host.name}", telemetry, metrics)
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[METRICS] = metrics
    app[TELEMETRY] = telemetry
    app[BUS] = bus
    app[READINESS] = [
        ("nats", lambda: (bus.connected, bus.connected_url or (bus.last_error or "connecting")))
    ]

    async def telemetry_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        telemetry.shutdown()

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        await bus.start()
        yield
        await bus.close()

    app.cleanup_ctx.extend([telemetry_ctx, bus_ctx])
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    document = api.document()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)
    api.install(app)
    return app
