"""The selector service's application: the runtime's base app, the KV watchers, and the same
operations over HTTP (``/v1/...``) and NATS request/reply (``ferry.selector.*``, queue group
``ferry-selector``, so that any number of instances share the requests)."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from ferry_hostnet.selector_api import (
    CONSTRAINT_ADD,
    CONSTRAINT_LIST,
    CONSTRAINT_QUERY,
    CONSTRAINT_REMOVE,
    HOST_MIGRATION_NETWORKS,
    KNOWN_HOSTS,
    MIGRATION_NETWORKS_QUERY,
    MIGRATION_NETWORKS_SET,
    PLAN,
    PLAN_REQUEST,
    ConstraintAdd,
    ConstraintList,
    ConstraintQuery,
    ConstraintRemove,
    HostMigrationNetworks,
    KnownHosts,
    MigrationNetworksSet,
    Plan,
    PlanRequest,
)
from ferry_runtime import subjects
from ferry_runtime.bus import HandlerError, Request
from ferry_runtime.codec import PayloadError, Schema
from ferry_runtime.config import validate_host_name
from ferry_runtime.http import (
    BUS,
    READINESS,
    REGISTRY,
    TELEMETRY,
    Api,
    Param,
    create_service_app,
    error_response,
    json_model,
)
from opentelemetry.sdk.trace.export import SpanExporter
from pydantic import BaseModel, ValidationError

from .planner import Planner
from .selector import Selector, SelectorMetrics
from .settings import SelectorSettings
from .state import ClusterState
from .store import Store, StoreMetrics

SELECTOR = web.AppKey("selector", Selector)

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


def invalid(exc: ValidationError) -> HandlerError:
    """A 400 naming each bad field."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return HandlerError(400, "; ".join(parts))


def build(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def interface_ref(text: str) -> int | str:
    """In a query string, a number is an interface index and anything else a name."""
    return int(text) if text.isdecimal() else text


# -- HTTP ---------------------------------------------------------------------------------------------


def _http(
    handler: Callable[[web.Request], Awaitable[BaseModel]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return json_model(await handler(request))
        except HandlerError as exc:
            return error_response(exc.status, exc.message)

    return wrapped


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HandlerError(400, "the body is not JSON") from None


def _host_path(request: web.Request) -> str:
    host = request.match_info["host"]
    try:
        return validate_host_name(host)
    except ValueError as exc:
        raise HandlerError(400, f"host: {exc}") from None


async def get_plan(request: web.Request) -> BaseModel:
    query = request.query
    missing = [k for k in ("client", "server") if not query.get(k)]
    if missing:
        raise HandlerError(400, f"missing query parameter {' and '.join(missing)}")
    plan_request = build(
        PlanRequest,
        {"client": query["client"], "server": query["server"], "purpose": query.get("purpose", "smb")},
    )
    return request.app[SELECTOR].plan(plan_request)


async def get_hosts(request: web.Request) -> BaseModel:
    return request.app[SELECTOR].hosts()


async def get_constraints(request: web.Request) -> BaseModel:
    query = build(ConstraintQuery, {k: request.query[k] for k in ("client", "server") if k in request.query})
    return request.app[SELECTOR].list_constraints(query)


async def post_constraint(request: web.Request) -> BaseModel:
    return await request.app[SELECTOR].add_constraint(build(ConstraintAdd, await _json_body(request)))


async def delete_constraint(request: web.Request) -> BaseModel:
    removal = build(
        ConstraintRemove,
        {
            "client": request.match_info["client"],
            "server": request.match_info["server"],
            "interfaces": [interface_ref(v) for v in request.query.getall("interface", [])],
        },
    )
    return await request.app[SELECTOR].remove_constraint(removal)


async def get_migration_networks(request: web.Request) -> BaseModel:
    return request.app[SELECTOR].migration_networks(_host_path(request))


async def put_migration_networks(request: web.Request) -> BaseModel:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise HandlerError(400, "the body must be an object: {networks: [...], use_any_network: bool}")
    if "host" in body or "clear" in body:
        raise HandlerError(400, "the host comes from the path; DELETE clears")
    update = build(MigrationNetworksSet, {**body, "host": _host_path(request)})
    return await request.app[SELECTOR].set_migration_networks(update)


async def delete_migration_networks(request: web.Request) -> BaseModel:
    update = MigrationNetworksSet(host=_host_path(request), clear=True)
    return await request.app[SELECTOR].set_migration_networks(update)


def _api() -> Api:
    api = Api(
        "Ferry selector",
        "1",
        "SMB Multichannel channel plans between hosts (which interface pairs, how many connections, "
        "RDMA or TCP, and why every interface is used or not), Multichannel constraints, and host "
        "migration networks. The same operations are served over NATS on ferry.selector.*.",
    )
    host_param = Param("host", "a host name", location="path")
    api.route(
        "GET",
        "/v1/plan",
        _http(get_plan),
        summary="the channel plan from client to server",
        response=Plan,
        params=[
            Param("client", "the host that opens the channels", required=True),
            Param("server", "the host they go to", required=True),
            Param("purpose", "smb (default) or migration", schema={"enum": ["smb", "migration"]}),
        ],
        errors=[400, 404, 503],
    )
    api.route(
        "GET", "/v1/hosts", _http(get_hosts), summary="hosts whose inventory is held", response=KnownHosts
    )
    api.route(
        "GET",
        "/v1/constraints",
        _http(get_constraints),
        summary="Multichannel constraints (Get-SmbMultichannelConstraint)",
        response=ConstraintList,
        params=[Param("client", "only this client host's"), Param("server", "only those for this server")],
        errors=[400, 503],
    )
    api.route(
        "POST",
        "/v1/constraints",
        _http(post_constraint),
        summary="add interfaces to a client's constraint for a server (New-SmbMultichannelConstraint); "
        'body {"client": ..., "server": ..., "interfaces": ["eth1", 4]}; answers the client\'s constraints',
        response=ConstraintList,
        errors=[400, 404, 409, 422, 503],
    )
    api.route(
        "DELETE",
        "/v1/constraints/{client}/{server}",
        _http(delete_constraint),
        summary="remove a constraint, or some of its interfaces (Remove-SmbMultichannelConstraint); "
        "answers the client's remaining constraints",
        response=ConstraintList,
        params=[
            Param("client", "the client host", location="path"),
            Param("server", "the server", location="path"),
            Param("interface", "only this interface (repeatable; a number is an index)"),
        ],
        errors=[400, 404, 409, 503],
    )
    api.route(
        "GET",
        "/v1/hosts/{host}/migration-networks",
        _http(get_migration_networks),
        summary="a host's migration networks as plans use them",
        response=HostMigrationNetworks,
        params=[host_param],
        errors=[400, 503],
    )
    api.route(
        "PUT",
        "/v1/hosts/{host}/migration-networks",
        _http(put_migration_networks),
        summary="replace a host's migration networks (Add-VMMigrationNetwork, Set-VMHost "
        '-UseAnyNetworkForMigration); body {"networks": [{"subnet": "10.0.2.0/24", "priority": 0}], '
        '"use_any_network": false}',
        response=HostMigrationNetworks,
        params=[host_param],
        errors=[400, 409, 503],
    )
    api.route(
        "DELETE",
        "/v1/hosts/{host}/migration-networks",
        _http(delete_migration_networks),
        summary="forget a host's migration networks (the selector's default applies again)",
        response=HostMigrationNetworks,
        params=[host_param],
        errors=[400, 409, 503],
    )
    return api


# -- NATS --------------------------------------------------------------------------------------------


def _responder(
    request_schema: Schema[M] | None,
    reply_schema: Schema[R],
    operation: Callable[[Any], Awaitable[R] | R],
) -> Callable[[Request], Awaitable[bytes]]:
    """A NATS handler: decode the request (none for ``request_schema`` None), run the operation,
    encode its result; a malformed request is a 400."""

    async def handle(request: Request) -> bytes:
        body: M | None = None
        if request_schema is not None:
            try:
                body = request_schema.decode(request.data)
            except PayloadError as exc:
                raise HandlerError(400, str(exc)) from None
        result = operation(body)
        if inspect.isawaitable(result):
            result = await result
        return reply_schema.encode(result)

    return handle


def create_app(settings: SelectorSettings, *, span_exporter: SpanExporter | None = None) -> web.Application:
    app = create_service_app(settings, _api(), span_exporter=span_exporter)
    bus = app[BUS]
    options = settings.selector
    state = ClusterState()
    store = Store(bus, state, options, StoreMetrics(app[REGISTRY]))
    selector = Selector(
        state,
        store,
        Planner(options.policy(), options.unset_migration_networks),
        SelectorMetrics(app[REGISTRY], state),
        app[TELEMETRY],
    )
    app[SELECTOR] = selector
    app[READINESS].append(("state", store.readiness))

    responders: list[tuple[str, Callable[[Request], Awaitable[bytes]]]] = [
        (subjects.SELECTOR_PLAN, _responder(PLAN_REQUEST, PLAN, selector.plan)),
        (subjects.SELECTOR_HOSTS, _responder(None, KNOWN_HOSTS, lambda _: selector.hosts())),
        (
            subjects.SELECTOR_CONSTRAINT_LIST,
            _responder(CONSTRAINT_QUERY, CONSTRAINT_LIST, selector.list_constraints),
        ),
        (
            subjects.SELECTOR_CONSTRAINT_ADD,
            _responder(CONSTRAINT_ADD, CONSTRAINT_LIST, selector.add_constraint),
        ),
        (
            subjects.SELECTOR_CONSTRAINT_REMOVE,
            _responder(CONSTRAINT_REMOVE, CONSTRAINT_LIST, selector.remove_constraint),
        ),
        (
            subjects.SELECTOR_MIGRATION_NETWORKS_GET,
            _responder(
                MIGRATION_NETWORKS_QUERY,
                HOST_MIGRATION_NETWORKS,
                lambda q: selector.migration_networks(q.host),
            ),
        ),
        (
            subjects.SELECTOR_MIGRATION_NETWORKS_SET,
            _responder(MIGRATION_NETWORKS_SET, HOST_MIGRATION_NETWORKS, selector.set_migration_networks),
        ),
    ]

    async def selector_ctx(app: web.Application) -> AsyncIterator[None]:
        for subject, handler in responders:
            await bus.serve(subject, handler, queue=subjects.SELECTOR_QUEUE)
        await store.start()
        yield
        await store.stop()

    app.cleanup_ctx.append(selector_ctx)
    return app
