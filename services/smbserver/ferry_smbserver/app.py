"""The smbserver's application: the runtime's base app, the SMB server, the migration shares
(NATS API), the interface advertisement and the HTTP views."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from ferry_runtime import subjects
from ferry_runtime.bus import Handler as BusHandler
from ferry_runtime.bus import HandlerError, Request
from ferry_runtime.codec import PayloadError, Schema
from ferry_runtime.http import (
    BUS,
    READINESS,
    REGISTRY,
    Api,
    Param,
    create_service_app,
    error_response,
    json_model,
)
from ferry_runtime.migration_shares import (
    CREATE_SHARE,
    MIGRATION_SHARE,
    REMOVE_SHARE,
    RENEW_SHARE,
    SHARE_REMOVED,
    MigrationShare,
)
from opentelemetry.sdk.trace.export import SpanExporter
from pydantic import BaseModel
from smbcore.aio_server import ServerSettings, SMBConnection, SMBServer
from smbcore.auth import ServerAuthenticator, UserDatabase
from smbcore.fileservice import FsFileService
from smbcore.messages import ShareType
from smbcore.pipes import PipeService, ShareRouter
from smbcore.server import ServerPolicy, Share

from .advertise import Advertiser
from .leases import KvLeaseStore, MigrationShares, ShareError
from .metrics import InterfaceBytes, MeteredFiles, ServerCollector, SmbMetrics, sample_forever
from .settings import SmbServerSettings
from .views import (
    ChannelList,
    CloseResult,
    InterfaceList,
    SessionList,
    ShareList,
    ShareView,
    channel_views,
    interface_list,
    lease_view,
    session_views,
    share_view,
)

log = logging.getLogger(__name__)


class ServerShares:
    """The SMB server's share table as the migration shares change it."""

    def __init__(self, server: SMBServer) -> None:
        self._server = server

    def add_share(self, share: Share) -> None:
        self._server.state.add_share(share)

    def remove_share(self, name: str) -> Share | None:
        share = self._server.state.remove_share(name)
        self._server.pump()  # close the handles of the opens it ended
        return share

    def get_share(self, name: str) -> Share | None:
        return self._server.state.shares.get(name.lower())


@dataclass
class SmbService:
    settings: SmbServerSettings
    server: SMBServer
    users: UserDatabase
    advertiser: Advertiser
    leases: MigrationShares
    metrics: SmbMetrics
    collector: ServerCollector
    listening: list[tuple[str, int]] = field(default_factory=list)


SERVICE = web.AppKey("smbserver", SmbService)


def netbios_name(settings: SmbServerSettings) -> str:
    return settings.smb.server_name or settings.host.name.split(".")[0].upper()[:15] or "FERRY"


def configured_shares(settings: SmbServerSettings) -> dict[str, Share]:
    encrypt_all = settings.smb.encrypt_all
    shares = {
        name: Share(
            name,
            ShareType.DISK,
            encrypt=options.encrypt or encrypt_all,
            users=frozenset(u.lower() for u in options.users) if options.users is not None else None,
            hidden=options.hidden if options.hidden is not None else name.endswith("$"),
            path=options.path,
            guest_ok=options.guest_ok,
        )
        for name, options in settings.shares.items()
    }
    # With a guest share, IPC$ takes null sessions too, so `smbclient -L -N` lists the shares.
    guests = any(options.guest_ok for options in settings.shares.values())
    shares["IPC$"] = Share("IPC$", ShareType.PIPE, encrypt=encrypt_all, guest_ok=guests)
    return shares


def build_server(
    settings: SmbServerSettings,
    users: UserDatabase,
    advertiser: Advertiser,
    metrics: SmbMetrics,
    on_connection_closed: Callable[[SMBConnection], None] | None = None,
) -> SMBServer:
    smb = settings.smb
    holder: list[SMBServer] = []
    pipes = PipeService(lambda: list(holder[0].state.shares.values()), server_name=netbios_name(settings))
    server = SMBServer(
        ServerSettings(
            shares=configured_shares(settings),
            authenticator_factory=lambda: ServerAuthenticator(
                users, allow_guests=any(s.guest_ok for s in settings.shares.values())
            ),
            initial_token=ServerAuthenticator.initial_token(),
            limits=settings.limits.server_limits(),
            policy=ServerPolicy(
                require_signing=smb.require_signing,
                encrypt_all=smb.encrypt_all,
                min_dialect=smb.min_dialect_value,
            ),
            interfaces=advertiser.interfaces,
            files=MeteredFiles(ShareRouter(disk=FsFileService(), pipes=pipes), metrics),
            on_request=metrics.request_answered,
            on_connection_closed=on_connection_closed,
        )
    )
    holder.append(server)
    return server


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _session_id(text: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"not a session id: {text!r} (decimal, or hex with 0x)") from None


In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


def responder(
    schema_in: Schema[In], schema_out: Schema[Out], call: Callable[[In], Awaitable[Out]]
) -> BusHandler:
    """A NATS responder: decode, call, encode; a refusal becomes an error reply."""

    async def handle(request: Request) -> bytes:
        try:
            body = schema_in.decode(request.data)
        except PayloadError as exc:
            raise HandlerError(400, str(exc)) from None
        try:
            result = await call(body)
        except ShareError as exc:
            raise HandlerError(exc.status, exc.message) from None
        return schema_out.encode(result)

    return handle


class MigrationShareList(BaseModel):
    shares: list[MigrationShare]


async def get_sessions(request: web.Request) -> web.Response:
    return json_model(SessionList(sessions=session_views(request.app[SERVICE].server)))


async def close_session(request: web.Request) -> web.Response:
    server = request.app[SERVICE].server
    session_id = _session_id(request.match_info["session_id"])
    session = server.state.sessions.get(session_id)
    if session is None:
        return error_response(404, f"no session {request.match_info['session_id']}")
    user = session.user
    connections = [c for c in list(server.connections) if c.conn in session.channels]
    if not server.close_session(session_id):  # gone in between (cannot happen without an await)
        return error_response(404, f"no session {request.match_info['session_id']}")
    # close_session closed the connections this session alone used.
    closed = sum(1 for c in connections if not c.conn.sessions)
    log.info("session closed by the operator", extra={"session": hex(session_id), "user": user})
    return json_model(CloseResult(session_id=session_id, closed_connections=closed))


def _share_view(service: SmbService, share: Share) -> ShareView:
    record = service.leases.record_of(share.name)
    lease = (
        lease_view(record.source, record.migration_id, record.account, record.destination, record.expires_at)
        if record is not None
        else None
    )
    return share_view(share, service.server, lease)


async def get_shares(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    hidden = _flag(request, "hidden")
    shares = sorted(service.server.state.shares.values(), key=lambda s: s.name.lower())
    views = [_share_view(service, s) for s in shares if hidden or not s.hidden]
    return json_model(ShareList(shares=views))


async def get_share(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name = request.match_info["name"]
    share = service.server.state.shares.get(name.lower())
    if share is None:
        return error_response(404, f"no share {name}")
    return json_model(_share_view(service, share))


async def get_channels(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    session = request.query.get("session")
    session_id = _session_id(session) if session else None
    return json_model(ChannelList(channels=channel_views(service.server, service.advertiser, session_id)))


async def get_interfaces(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if _flag(request, "refresh"):
        await service.advertiser.refresh()
    return json_model(interface_list(service.advertiser))


async def get_migration_shares(request: web.Request) -> web.Response:
    return json_model(MigrationShareList(shares=request.app[SERVICE].leases.shares()))


def build_api() -> Api:
    api = Api(
        "Ferry smbserver",
        "1",
        "This host's SMB 3 server: sessions, shares (configured and temporary migration shares), "
        "channels, and the interfaces it advertises to Multichannel clients.",
    )
    session_param = Param("session_id", "decimal, or hex with 0x", location="path")
    api.route(
        "GET", "/v1/sessions", get_sessions, summary="sessions (like Get-SmbSession)", response=SessionList
    )
    api.route(
        "DELETE",
        "/v1/sessions/{session_id}",
        close_session,
        summary="close a session (its opens close; connections it alone used are closed)",
        response=CloseResult,
        params=[session_param],
        errors=[400, 404],
    )
    api.route(
        "GET",
        "/v1/shares",
        get_shares,
        summary="shares (like Get-SmbShare); hidden ones only with ?hidden=1",
        response=ShareList,
        params=[Param("hidden", "1: include hidden shares (names ending in $, migration shares)")],
    )
    api.route(
        "GET",
        "/v1/shares/{name}",
        get_share,
        summary="one share, hidden or not",
        response=ShareView,
        params=[Param("name", "the share's name (any case)", location="path")],
        errors=[404],
    )
    api.route(
        "GET",
        "/v1/channels",
        get_channels,
        summary="channels (like Get-SmbMultichannelConnection), per session",
        response=ChannelList,
        params=[Param("session", "only this session's channels (decimal, or hex with 0x)")],
        errors=[400],
    )
    api.route(
        "GET",
        "/v1/interfaces",
        get_interfaces,
        summary="this host's addresses and what FSCTL_QUERY_NETWORK_INTERFACE_INFO advertises",
        response=InterfaceList,
        params=[Param("refresh", "1: read the inventory (or the kernel) again first")],
    )
    api.route(
        "GET",
        "/v1/migration-shares",
        get_migration_shares,
        summary="the temporary migration shares and their leases",
        response=MigrationShareList,
    )
    return api


def create_app(settings: SmbServerSettings, *, span_exporter: SpanExporter | None = None) -> web.Application:
    app = create_service_app(settings, build_api(), span_exporter=span_exporter)
    bus = app[BUS]
    host = settings.host.name
    metrics = SmbMetrics(app[REGISTRY])
    users = UserDatabase(settings.smb.users)
    advertiser = Advertiser(host, settings.advertise, dict(settings.interfaces), bus)
    interface_bytes = InterfaceBytes(advertiser)
    server = build_server(settings, users, advertiser, metrics, interface_bytes.connection_closed)
    store = KvLeaseStore(bus, host, settings.migration.kv_replicas)
    leases = MigrationShares(host, settings.migration, ServerShares(server), store, users, metrics)
    metrics.set_migration_shares(leases.names)
    collector = ServerCollector(server, advertiser, leases.names, interface_bytes)
    app[REGISTRY].register(collector)
    service = SmbService(settings, server, users, advertiser, leases, metrics, collector)
    app[SERVICE] = service
    app[READINESS].extend(
        [
            (
                "smb",
                lambda: (
                    bool(service.listening),
                    ", ".join(f"{h}:{p}" for h, p in service.listening) or "not listening",
                ),
            ),
            (
                "leases",
                lambda: (leases.restored, "restored" if leases.restored else "not read from NATS yet"),
            ),
        ]
    )

    async def smb_ctx(app: web.Application) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        for root in settings.migration.allowed_roots:
            try:
                await asyncio.to_thread(Path(root).mkdir, mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                log.error("cannot create a migration root", extra={"root": root, "error": str(exc)})
        await advertiser.start()
        try:
            for address in settings.smb.listen:
                service.listening += await server.start(address, settings.smb.port)
        except OSError:
            await server.close()
            await advertiser.stop()
            raise
        for address, port in service.listening:
            shown = f"[{address}]" if ":" in address else address
            log.info("SMB listening", extra={"address": f"{shown}:{port}"})
            print(f"serving SMB on {shown}:{port}", flush=True)
        await bus.serve(
            subjects.smbserver_share_create(host),
            responder(CREATE_SHARE, MIGRATION_SHARE, leases.create),
            pattern=f"{subjects.SMBSERVER_SHARE_CREATE_PREFIX}.<host>",
        )
        await bus.serve(
            subjects.smbserver_share_renew(host),
            responder(RENEW_SHARE, MIGRATION_SHARE, leases.renew),
            pattern=f"{subjects.SMBSERVER_SHARE_RENEW_PREFIX}.<host>",
        )
        await bus.serve(
            subjects.smbserver_share_remove(host),
            responder(REMOVE_SHARE, SHARE_REMOVED, leases.remove),
            pattern=f"{subjects.SMBSERVER_SHARE_REMOVE_PREFIX}.<host>",
        )
        tasks.append(asyncio.create_task(leases.maintain(lambda: bus.connected), name="leases"))
        tasks.append(asyncio.create_task(sample_forever(collector), name="metrics-sampler"))
        yield
        await server.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await leases.close()
        await advertiser.stop()

    app.cleanup_ctx.append(smb_ctx)
    return app
