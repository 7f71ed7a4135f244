"""ferry_runtime.http: the OpenAPI document and the base app every service builds on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from ferry_hostnet.model import Inventory
from ferry_runtime.config import HostSettings, NatsSettings, ServiceSettings
from ferry_runtime.http import READINESS, Api, Param, create_service_app, error_response, json_model
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

Client = TestClient[web.Request, web.Application]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


class Part(BaseModel):
    label: str


class Thing(BaseModel):
    name: str
    parts: list[Part] = []


async def get_thing(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "missing":
        raise web.HTTPNotFound(text=f"no thing {name}")
    return json_model(Thing(name=name, parts=[Part(label="a")]))


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("kaput")


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/things/elsewhere")


async def teapot(request: web.Request) -> web.Response:
    return error_response(418, "short and stout")


async def odd_status(request: web.Request) -> web.Response:
    return error_response(599, "odd")


def make_api() -> Api:
    api = Api("Things", "1.2.3", "A test service")
    api.route(
        "get",
        "/things/{name}",
        get_thing,
        summary="one thing",
        response=Thing,
        params=[Param("name", "the thing's name", location="path"), Param("verbose", "more detail")],
        errors=[404],
    )
    api.route("DELETE", "/things/{name}", get_thing, summary="remove a thing", errors=[404, 409])
    api.route("GET", "/boom", boom, summary="always fails")
    api.route("GET", "/moved", moved, summary="redirects")
    api.route("GET", "/teapot", teapot, summary="an error response returned, not raised")
    api.route("GET", "/odd", odd_status, summary="a status without a standard phrase")
    return api


# -- the OpenAPI document -----------------------------------------------------------------------


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_document_header() -> None:
    doc = make_api().document()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"] == {"title": "Things", "version": "1.2.3", "description": "A test service"}


def test_document_declared_route() -> None:
    op = make_api().document()["paths"]["/things/{name}"]["get"]
    assert op["summary"] == "one thing"
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert op["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert op["parameters"] == [
        {
            "name": "name",
            "in": "path",
            "required": True,  # path parameters always are
            "description": "the thing's name",
            "schema": {"type": "string"},
        },
        {
            "name": "verbose",
            "in": "query",
            "required": False,
            "description": "more detail",
            "schema": {"type": "string"},
        },
    ]


def test_document_several_methods_on_one_path() -> None:
    path = make_api().document()["paths"]["/things/{name}"]
    assert set(path) == {"get", "delete"}
    delete = path["delete"]
    assert delete["responses"]["200"] == {"description": "OK"}  # no response model
    assert set(delete["responses"]) == {"200", "404", "409"}
    assert "parameters" not in delete


def test_document_components() -> None:
    doc = make_api().document()
    schemas = doc["components"]["schemas"]
    assert {"Thing", "Part", "ErrorBody"} <= set(schemas)
    assert set(schemas["Thing"]["properties"]) == {"name", "parts"}
    assert schemas["Thing"]["properties"]["parts"]["items"] == {"$ref": "#/components/schemas/Part"}
    assert set(schemas["ErrorBody"]["required"]) == {"status", "error", "message"}


def test_document_refs_all_resolve() -> None:
    api = make_api()
    api.route("GET", "/inventory", get_thing, summary="an inventory", response=Inventory)
    doc = api.document()
    schemas = doc["components"]["schemas"]
    assert {"Inventory", "Interface", "Address", "RdmaPort", "RdmaKind"} <= set(schemas)
    found = set(refs(doc))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert "$defs" not in str(doc)


def test_document_builtin_paths() -> None:
    paths = make_api().document()["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert "200" in paths[path]["get"]["responses"], path
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "503" not in paths["/healthz"]["get"]["responses"]


def test_document_of_an_empty_api() -> None:
    doc = Api("Empty", "0").document()
    assert set(doc["paths"]) == {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    assert set(doc["components"]["schemas"]) == {"ErrorBody"}


# -- the base app -------------------------------------------------------------------------------


def unreachable_nats_settings() -> ServiceSettings:
    """Nothing listens on port 1: the bus keeps retrying in the background, quickly."""
    return ServiceSettings(
        host=HostSettings(name="test-host"),
        nats=NatsSettings(url=["nats://127.0.0.1:1"], connect_timeout=0.5, reconnect_wait=0.05),
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def app(exporter: InMemorySpanExporter) -> web.Application:
    return create_service_app(unreachable_nats_settings(), make_api(), span_exporter=exporter)


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app)) as client:
        yield client


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_without_nats(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False
    assert body["checks"]["nats"]["ok"] is False
    assert isinstance(body["checks"]["nats"]["detail"], str)
    assert body["checks"]["nats"]["detail"]


async def test_readyz_when_every_check_passes(exporter: InMemorySpanExporter) -> None:
    app = create_service_app(unreachable_nats_settings(), Api("t", "1"), span_exporter=exporter)
    app[READINESS] = [("disk", lambda: (True, "plenty")), ("cache", lambda: (True, "warm"))]
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert await response.json() == {
            "ready": True,
            "checks": {"disk": {"ok": True, "detail": "plenty"}, "cache": {"ok": True, "detail": "warm"}},
        }


async def test_readyz_one_failing_check(exporter: InMemorySpanExporter) -> None:
    app = create_service_app(unreachable_nats_settings(), Api("t", "1"), span_exporter=exporter)
    app[READINESS] = [("disk", lambda: (True, "plenty")), ("cache", lambda: (False, "cold"))]
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["checks"]["cache"] == {"ok": False, "detail": "cold"}


async def test_metrics(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/things/x")).status == 200
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert "ferry_http_requests_total" in text
    assert 'ferry_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    # Routes are labelled by their pattern, not by the path asked for.
    assert 'ferry_http_requests_total{method="GET",route="/things/{name}",status="200"} 1.0' in text
    assert "ferry_http_request_duration_seconds_bucket" in text
    assert "ferry_nats_connected 0.0" in text


async def test_openapi_served(app: web.Application, client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert await response.json() == make_api().document()


async def test_declared_route(client: Client) -> None:
    response = await client.get("/things/widget")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"name": "widget", "parts": [{"label": "a"}]}


@pytest.mark.parametrize(
    ("request_line", "status", "error", "message"),
    [
        ("GET /no/such/path", 404, "Not Found", "Not Found: GET /no/such/path"),
        ("POST /healthz", 405, "Method Not Allowed", "Method Not Allowed: POST /healthz"),
        ("GET /things/missing", 404, "Not Found", "no thing missing"),
        ("GET /boom", 500, "Internal Server Error", "internal error: RuntimeError"),
        ("GET /teapot", 418, "I'm a Teapot", "short and stout"),
        ("GET /odd", 599, "Error", "odd"),
    ],
)
async def test_errors_are_json(
    client: Client, request_line: str, status: int, error: str, message: str
) -> None:
    method, path = request_line.split()
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == {"status": status, "error": error, "message": message}


async def test_unknown_paths_share_one_metrics_label(
    client: Client,
) -> None:
    for path in ("/a", "/b", "/c/d"):
        assert (await client.get(path)).status == 404
    text = await (await client.get("/metrics")).text()
    assert 'ferry_http_requests_total{method="GET",route="unmatched",status="404"} 3.0' in text


async def test_redirects_pass_through(client: Client) -> None:
    response = await client.get("/moved", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/things/elsewhere"


async def test_failing_handler_span_and_log(
    client: Client,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("ERROR", logger="ferry_runtime.http"):
        assert (await client.get("/boom")).status == 500
    assert any(r.message == "HTTP handler failed" and r.exc_info for r in caplog.records)
    (span,) = spans_named(exporter, "GET /boom")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "RuntimeError"


async def test_request_span(client: Client, exporter: InMemorySpanExporter) -> None:
    assert (await client.get("/things/widget?verbose=1")).status == 200
    (span,) = spans_named(exporter, "GET /things/{name}")
    assert span.kind is SpanKind.SERVER
    assert span.parent is None  # no traceparent: a new trace
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "http.route": "/things/{name}",
        "url.path": "/things/widget",
        "http.response.status_code": 200,
    }
    assert span.resource.attributes["service.name"] == "ferry"
    assert span.resource.attributes["host.name"] == "test-host"


@pytest.mark.parametrize("header", ["traceparent", "Traceparent", "TRACEPARENT"])
async def test_request_span_continues_incoming_trace(
    client: Client, exporter: InMemorySpanExporter, header: str
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    assert (await client.get("/healthz", headers={header: traceparent})).status == 200
    (span,) = spans_named(exporter, "GET /healthz")
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.context.span_id != int(PARENT_SPAN_ID, 16)


async def test_request_span_ignores_malformed_traceparent(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    assert (await client.get("/healthz", headers={"traceparent": "00-nonsense-01"})).status == 200
    (span,) = spans_named(exporter, "GET /healthz")
    assert span.parent is None


async def test_unmatched_request_span(client: Client, exporter: InMemorySpanExporter) -> None:
    assert (await client.get("/no/such/path")).status == 404
    (span,) = spans_named(exporter, "GET unmatched")
    assert span.attributes is not None
    assert span.attributes["url.path"] == "/no/such/path"
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET  # a client error is not the server's
