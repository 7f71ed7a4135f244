"""The server's state as the HTTP API shows it, like PowerShell's ``Get-SmbSession``,
``Get-SmbShare`` and ``Get-SmbMultichannelConnection``: read from the SMB server's tables at
each request, never cached.

What a server cannot know is left out rather than guessed: a client's interface index, RSS
capability and link speed are the client's to report (Windows fills them in from the client's
own FSCTL answer, which a server never sees).
"""

from __future__ import annotations

import collections
import time

from pydantic import BaseModel, Field
from smbcore.aio_server import SMBConnection, SMBServer
from smbcore.crypto import CipherId, SigningAlgorithm
from smbcore.messages import ShareType
from smbcore.negotiate import Dialect
from smbcore.server import ServerConnection, Session, SessionState, Share

from .advertise import Advertiser, LocalAddress, normalize_address
from .connections import shells

_DIALECT_NAMES = {
    Dialect.SMB_2_0_2: "2.0.2",
    Dialect.SMB_2_1: "2.1",
    Dialect.SMB_3_0: "3.0",
    Dialect.SMB_3_0_2: "3.0.2",
    Dialect.SMB_3_1_1: "3.1.1",
}


def dialect_name(value: int) -> str:
    try:
        return _DIALECT_NAMES[Dialect(value)]
    except (ValueError, KeyError):
        return f"0x{value:04x}"


def signing_name(value: int) -> str:
    try:
        return SigningAlgorithm(value).name.replace("_", "-")
    except ValueError:
        return f"0x{value:04x}"


def cipher_name(value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return CipherId(value).name.replace("_", "-")
    except ValueError:
        return f"0x{value:04x}"


class SessionView(BaseModel):
    session_id: int
    session_id_hex: str
    state: str
    client_address: str | None = Field(description="the client's address on the session's first channel")
    user: str | None = Field(description="the account; Guest for a guest session, null for an anonymous one")
    domain: str | None
    kind: str = Field(description='"user", "guest" or "anonymous" (SMB2_SESSION_FLAG_IS_GUEST / IS_NULL)')
    dialect: str
    signing_required: bool
    signing_algorithm: str
    encrypt_data: bool = Field(description="the session encrypts everything (else per share)")
    cipher: str | None
    channels: int
    trees: int
    shares: list[str] = Field(description="the shares its tree connects are on")
    opens: int


class SessionList(BaseModel):
    sessions: list[SessionView]


class LeaseView(BaseModel):
    source: str
    migration_id: str
    account: str
    destination: str
    expires_at: float
    expires_in: float


class ShareView(BaseModel):
    name: str
    type: str
    path: str | None
    encrypt: bool
    users: list[str] | None = Field(description="who may connect; null: every account")
    guest_ok: bool = Field(description="anonymous and guest sessions may connect too")
    hidden: bool = Field(description="left out of share listings (srvsvc): a name ending in $")
    migration: bool = Field(description="a temporary migration share")
    trees: int = Field(description="tree connects on it now")
    opens: int
    lease: LeaseView | None = None


class ShareList(BaseModel):
    shares: list[ShareView]


class ChannelView(BaseModel):
    session_id: int
    session_id_hex: str
    user: str | None
    dialect: str
    client_address: str | None
    client_port: int | None
    server_address: str | None
    server_port: int | None
    server_interface: str | None = Field(description="this host's interface the channel came in on")
    server_interface_index: int | None
    server_rss_capable: bool | None
    server_rdma_capable: bool | None
    server_link_speed_bps: int | None
    server_interface_advertised: bool | None = Field(
        description="the server address is in the FSCTL_QUERY_NETWORK_INTERFACE_INFO answer"
    )
    client_interface_index: int | None = Field(None, description="unknown to a server")
    transport: str = Field("tcp", description="tcp or rdma (SMB Direct)")
    rdma: bool = False
    signing_algorithm: str
    cipher: str | None
    bytes_sent: int = Field(description="SMB2 bytes this server sent on the channel (framing excluded)")
    bytes_received: int


class ChannelList(BaseModel):
    channels: list[ChannelView]


class InterfaceView(BaseModel):
    interface: str
    ifindex: int
    address: str
    speed_bps: int
    rss: bool
    rdma: bool
    advertised: bool


class InterfaceList(BaseModel):
    source: str = Field(description="discovery (the KV inventory), kernel (read directly), or none")
    collected_at: float | None
    interfaces: list[InterfaceView]


class CloseResult(BaseModel):
    session_id: int
    closed_connections: int = Field(description="connections closed because no other session used them")


def _opens_by_session(server: SMBServer) -> collections.Counter[int]:
    return collections.Counter(o.session.session_id for o in list(server.state.opens.values()))


def _first_shell(session: Session, by_core: dict[ServerConnection, SMBConnection]) -> SMBConnection | None:
    for conn in session.channels:
        shell = by_core.get(conn)
        if shell is not None:
            return shell
    return None


def session_views(server: SMBServer) -> list[SessionView]:
    by_core = shells(server)
    opens = _opens_by_session(server)
    result = []
    for session in sorted(server.state.sessions.values(), key=lambda s: s.session_id):
        shell = _first_shell(session, by_core)
        peer = shell.peer_address if shell is not None else None
        result.append(
            SessionView(
                session_id=session.session_id,
                session_id_hex=f"0x{session.session_id:016x}",
                state="valid" if session.state is SessionState.VALID else "in-progress",
                client_address=peer[0] if peer else None,
                user=session.user,
                domain=session.domain,
                kind="anonymous" if session.anonymous else "guest" if session.guest else "user",
                dialect=dialect_name(session.dialect),
                signing_required=session.signing_required,
                signing_algorithm=signing_name(session.signing_algorithm),
                encrypt_data=session.encrypt_data,
                cipher=cipher_name(session.cipher),
                channels=len(session.channels),
                trees=len(session.trees),
                shares=sorted({t.share.name for t in session.trees.values()}),
                opens=opens.get(session.session_id, 0),
            )
        )
    return result


def share_view(share: Share, server: SMBServer, lease: LeaseView | None) -> ShareView:
    trees = sum(1 for s in list(server.state.sessions.values()) for t in s.trees.values() if t.share is share)
    opens = sum(1 for o in list(server.state.opens.values()) if o.tree.share is share)
    return ShareView(
        name=share.name,
        type=ShareType(share.share_type).name.lower(),
        path=share.path,
        encrypt=share.encrypt,
        users=sorted(share.users) if share.users is not None else None,
        guest_ok=share.guest_ok,
        hidden=share.hidden,
        migration=lease is not None,
        trees=trees,
        opens=opens,
        lease=lease,
    )


def lease_view(
    source: str, migration_id: str, account: str, destination: str, expires_at: float
) -> LeaseView:
    return LeaseView(
        source=source,
        migration_id=migration_id,
        account=account,
        destination=destination,
        expires_at=expires_at,
        expires_in=max(0.0, expires_at - time.time()),
    )


def channel_views(
    server: SMBServer, advertiser: Advertiser, session_id: int | None = None
) -> list[ChannelView]:
    by_core = shells(server)
    result = []
    for session in sorted(server.state.sessions.values(), key=lambda s: s.session_id):
        if session_id is not None and session.session_id != session_id:
            continue
        for conn in list(session.channels):
            shell = by_core.get(conn)
            peer = shell.peer_address if shell is not None else None
            local = shell.local_address if shell is not None else None
            iface: LocalAddress | None = advertiser.lookup(local[0]) if local else None
            result.append(
                ChannelView(
                    session_id=session.session_id,
                    session_id_hex=f"0x{session.session_id:016x}",
                    user=session.user,
                    dialect=dialect_name(conn.dialect),
                    client_address=normalize_address(peer[0]) if peer else None,
                    client_port=peer[1] if peer else None,
                    server_address=normalize_address(local[0]) if local else None,
                    server_port=local[1] if local else None,
                    server_interface=iface.interface if iface else None,
                    server_interface_index=iface.ifindex if iface else None,
                    server_rss_capable=iface.rss if iface else None,
                    server_rdma_capable=iface.rdma if iface else None,
                    server_link_speed_bps=iface.speed_bps if iface else None,
                    server_interface_advertised=iface.advertised if iface else None,
                    signing_algorithm=signing_name(conn.signing_algorithm),
                    cipher=cipher_name(conn.cipher),
                    bytes_sent=conn.bytes_sent,
                    bytes_received=conn.bytes_received,
                )
            )
    return result


def interface_list(advertiser: Advertiser) -> InterfaceList:
    return InterfaceList(
        source=advertiser.source,
        collected_at=advertiser.collected_at,
        interfaces=[
            InterfaceView(
                interface=a.interface,
                ifindex=a.ifindex,
                address=a.address,
                speed_bps=a.speed_bps,
                rss=a.rss,
                rdma=a.rdma,
                advertised=a.advertised,
            )
            for a in advertiser.addresses
        ],
    )
