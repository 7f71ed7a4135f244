"""The discovery service's application: the runtime's base app plus the inventory publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from ferry_hostnet import INVENTORY, Inventory
from ferry_runtime import subjects
from ferry_runtime.bus import HandlerError, Request
from ferry_runtime.http import BUS, READINESS, REGISTRY, Api, create_service_app, json_model
from opentelemetry.sdk.trace.export import SpanExporter

from .publisher import InventoryPublisher, PublisherMetrics
from .settings import DiscoverySettings

PUBLISHER = web.AppKey("publisher", InventoryPublisher)


async def get_interfaces(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    if request.query.get("refresh") in ("1", "true", "yes"):
        inventory = await publisher.read()
    else:
        inventory = publisher.current or await publisher.read()
    return json_model(inventory)


def create_app(settings: DiscoverySettings, *, span_exporter: SpanExporter | None = None) -> web.Application:
    api = Api(
        "Ferry discovery",
        "1",
        "This host's network interfaces as the kernel reports them, with operator overrides.",
    )
    api.route(
        "GET",
        "/v1/interfaces",
        get_interfaces,
        summary="this host's interface inventory",
        response=Inventory,
    )
    app = create_service_app(settings, api, span_exporter=span_exporter)
    bus = app[BUS]
    publisher = InventoryPublisher(settings, bus, PublisherMetrics(app[REGISTRY]))
    app[PUBLISHER] = publisher
    app[READINESS].append(
        (
            "inventory",
            lambda: (publisher.published, "published" if publisher.published else "not yet published"),
        )
    )

    async def answer_interfaces(request: Request) -> bytes:
        inventory = publisher.current
        if inventory is None:
            raise HandlerError(503, "inventory not read yet")
        return INVENTORY.encode(inventory)

    async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
        await bus.serve(
            subjects.discovery_interfaces(settings.host.name),
            answer_interfaces,
            pattern=f"{subjects.DISCOVERY_INTERFACES_PREFIX}.<host>",
        )
        await publisher.start()
        yield
        await publisher.stop()

    app.cleanup_ctx.append(publisher_ctx)
    return app
