"""The runtime as a service uses it: config errors, traces across NATS, the discovery app in-process."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ferry_discovery.app import create_app
from ferry_discovery.settings import DiscoverySettings
from ferry_hostnet import INVENTORY
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, NoResponders, RemoteError
from ferry_runtime.config import HostSettings, NatsSettings, TracingSettings, load_settings
from ferry_runtime.http import BUS
from ferry_runtime.metrics import RuntimeMetrics
from ferry_runtime.tracing import Telemetry
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from tests.support.procs import VENV_BIN, NatsServer


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[http]\nport = 70000\n", {}, "http.port: Input should be less than or equal to 65535 (got 70000)"),
        ("[nats]\nurl = 'http://x'\n", {}, "nats.url"),
        ("[discovery]\nrefresh_every = 3\n", {}, "discovery.refresh_every: unknown key"),
        ("[interfaces.eth0]\nspeed = 'fast'\n", {}, "interfaces.eth0.speed"),
        ("", {"FERRY_DISCOVERY__INVENTORY_TTL": "1"}, "inventory_ttl (1.0s) must be at least twice"),
        ("", {"FERRY_HOST__NAME": "bad host"}, "host.name"),
        ("[http\n", {}, "is not valid TOML"),
    ],
)
def test_bad_config_stops_with_a_message(
    tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    config = tmp_path / "discovery.toml"
    config.write_text(toml)
    proc = subprocess.run(
        [str(VENV_BIN / "ferry-discovery"), "--config", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ferry-discovery"), "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 78
    assert "does not exist" in proc.stderr


@pytest.fixture
async def discovery_client(
    nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[TestClient, InMemorySpanExporter, DiscoverySettings]]:
    config = tmp_path / "discovery.toml"
    config.write_text(
        f"""
[host]
name = "hv-trace"
site = "lab"
[nats]
url = "{nats_server.url}"
[interfaces.eth0]
speed = "25G"
rdma = "roce"
[interfaces.lo]
rss = true
[discovery]
include_loopback = true
"""
    )
    settings = load_settings(DiscoverySettings, config)
    exporter = InMemorySpanExporter()
    app = create_app(settings, span_exporter=exporter)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, exporter, settings
    finally:
        await client.close()


async def test_trace_crosses_nats_and_overrides_apply(
    discovery_client: tuple[TestClient, InMemorySpanExporter, DiscoverySettings], nats_server: NatsServer
) -> None:
    client, server_spans, _ = discovery_client
    await client.app[BUS].wait_connected(10)

    caller_spans = InMemorySpanExporter()
    telemetry = Telemetry("caller", HostSettings(name="caller"), TracingSettings(), caller_spans)
    bus = Bus(NatsSettings(url=[nats_server.url]), "caller", telemetry, RuntimeMetrics(CollectorRegistry()))
    await bus.start()
    await bus.wait_connected(10)
    try:
        with telemetry.span("operator asks") as root:
            reply = await bus.request(subjects.discovery_interfaces("hv-trace"), b"", timeout=5)
        inventory = INVENTORY.decode(reply)
        assert inventory.host == "hv-trace" and inventory.labels == {"site": "lab"}
        lo = inventory.interface("lo")
        assert lo is not None and lo.rss_capable and lo.overridden == ["rss_capable"]

        with pytest.raises(NoResponders):
            await bus.request(subjects.discovery_interfaces("nosuchhost"), b"", timeout=2)
    finally:
        await bus.close()
        telemetry.shutdown()

    trace_id = root.get_span_context().trace_id
    client_span = next(s for s in caller_spans.get_finished_spans() if s.kind is SpanKind.CLIENT)
    server_span = next(
        s
        for s in server_spans.get_finished_spans()
        if s.name == f"handle {subjects.DISCOVERY_INTERFACES_PREFIX}.<host>"
    )
    assert client_span.context.trace_id == trace_id
    assert server_span.context.trace_id == trace_id, "traceparent was not carried in NATS headers"
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id

    # HTTP: the same, from a traceparent header.
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await client.get("/v1/interfaces", headers={"traceparent": traceparent})
    assert response.status == 200
    body = await response.json()
    assert body["host"] == "hv-trace"
    http_span = next(s for s in server_spans.get_finished_spans() if s.name == "GET /v1/interfaces")
    assert f"{http_span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"

    metrics = await (await client.get("/metrics")).text()
    assert (
        'ferry_nats_requests_handled_total{outcome="ok",subject="ferry.discovery.interfaces.<host>"} 1.0'
        in metrics
    )
    assert "ferry_discovery_publishes_total" in metrics


async def test_responder_errors_reach_the_caller(nats_server: NatsServer) -> None:
    from ferry_runtime.bus import HandlerError, Request

    telemetry = Telemetry("t", HostSettings(name="t"), TracingSettings())
    server = Bus(
        NatsSettings(url=[nats_server.url]), "server", telemetry, RuntimeMetrics(CollectorRegistry())
    )
    caller = Bus(
        NatsSettings(url=[nats_server.url]), "caller", telemetry, RuntimeMetrics(CollectorRegistry())
    )

    async def handler(request: Request) -> bytes:
        if request.data == b"missing":
            raise HandlerError(404, "no such thing")
        if request.data == b"bug":
            raise RuntimeError("boom")
        return request.data.upper()

    await server.serve("test.echo", handler)
    for bus in (server, caller):
        await bus.start()
        await bus.wait_connected(10)
    try:
        assert await caller.request("test.echo", b"hi") == b"HI"
        with pytest.raises(RemoteError) as missing:
            await caller.request("test.echo", b"missing")
        assert (missing.value.status, missing.value.message) == (404, "no such thing")
        with pytest.raises(RemoteError) as bug:
            await caller.request("test.echo", b"bug")
        assert bug.value.status == 500
        assert await caller.request("test.echo", b"still serving") == b"STILL SERVING"
    finally:
        await caller.close()
        await server.close()
