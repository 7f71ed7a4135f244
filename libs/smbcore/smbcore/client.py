"""The SMB 3 client core, sans-IO: one :class:`ClientConnection` per transport connection.

Bytes go in through :meth:`ClientConnection.receive_pdu` (one whole PDU from the transport's
framing) with the current time; events come out of :meth:`ClientConnection.events`; PDUs to
send come out of :meth:`ClientConnection.data_to_send` as tuples of buffers (a WRITE's data
stays the caller's ``memoryview``, signed in place around it); timers are asked for with
:meth:`ClientConnection.get_timer` and fired with :meth:`ClientConnection.handle_timer`. No
socket, no clock, no ``asyncio`` here.

What the core does by itself: NEGOTIATE 3.1.1 / 3.0.2 / 3.0 with the pre-auth integrity,
encryption and signing contexts (MS-SMB2 3.2.4.2.2.2, 3.2.5.2); SESSION_SETUP rounds through
an authenticator (:class:`smbcore.auth.ClientAuthenticator`), pre-auth hashing and key
derivation per dialect (3.2.5.3.1); FSCTL_VALIDATE_NEGOTIATE_INFO for 3.0 / 3.0.2 (3.2.5.14.12);
MessageIds and credits (3.2.4.1.5, 3.2.4.1.6, 3.2.5.1.4) with a queue for requests that wait
for credits; signing (3.2.4.1.1) and verification, where a bad or missing signature is a
:class:`~smbcore.errors.RemoteProtocolError` that ends the connection (3.2.5.1.3);
encryption with the TRANSFORM_HEADER when the session, the share or the caller asks
(3.2.4.1.8, 3.2.5.1.1.1); matching responses to requests by MessageId, interim STATUS_PENDING
responses (3.2.5.1.5), compound requests and responses (3.2.4.1.4); request timeouts.

State is split the way Multichannel needs it (MS-SMB2 3.2.1.2, 3.2.1.3, 3.2.1.8): the
connection (:class:`ClientConnection`: dialect, cipher, signing algorithm, credits, MessageIds,
the connection's pre-auth hash) carries one channel of a :class:`Session` (keys, user, id,
the session's pre-auth hash, its :class:`TreeConnect` table), and the session's
:attr:`Session.channels` holds one :class:`Channel` (that connection's signing key) per
connection. :meth:`ClientConnection.start_session` establishes a session and its first
channel; :meth:`ClientConnection.bind_session` binds another connection to it
(SMB2_SESSION_FLAG_BINDING, MS-SMB2 3.2.4.2.3, 3.2.5.3.1): the binding requests are signed
with Session.SigningKey, 3.1.1's pre-auth hash starts from *that* connection's NEGOTIATE, and
the new entry of ``Session.channels`` signs with its own key from :func:`channel_signing_key`.

Every request of a session carries Session.ChannelSequence (MS-SMB2 2.2.1.2, 3.2.4.1); the
caller bumps it (:meth:`Session.bump_channel_sequence`) when a channel fails, and sends the
requests that were in flight on it again on another channel with ``replay=True``
(SMB2_FLAGS_REPLAY_OPERATION, 3.2.7.1). Which requests to replay, and where, is the shell's
business (:mod:`smbcore.multichannel`).

Each state machine is one transition table here (:data:`CONN_TRANSITIONS`,
:data:`REQUEST_TRANSITIONS`, :data:`SESSION_TRANSITIONS`); a missing entry is a protocol error.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import os
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from . import crypto
from .auth import AuthenticationError
from .client_errors import SecurityRequirementError
from .credits import ClientCredits, credit_charge
from .errors import LocalProtocolError, RemoteProtocolError, SMBProtocolError
from .fileops import (
    CreateResponse,
    FileTimes,
    ReadRequest,
    WriteRequest,
    decode_close_response,
    decode_output_buffer_response,
    decode_read_response,
    decode_set_info_response,
    decode_write_response,
)
from .header import HEADER_SIZE, PROTOCOL_ID, TRANSFORM_PROTOCOL_ID, Command, Flags, Header, decode_header
from .ioctl import NO_FILE_ID, CtlCode, IoctlRequest, ValidateNegotiateInfo, decode_ioctl_response
from .messages import (
    EMPTY4,
    Empty4,
    ErrorResponse,
    SessionFlags,
    SessionSetupFlags,
    SessionSetupRequest,
    SessionSetupResponse,
    ShareFlags,
    TreeConnectRequest,
    TreeConnectResponse,
)
from .negotiate import (
    HASH_SHA512,
    Capabilities,
    Dialect,
    EncryptionCapabilities,
    NegotiateContext,
    NegotiateRequest,
    NegotiateResponse,
    NetnameContext,
    PreauthIntegrity,
    SecurityMode,
    SigningCapabilities,
)
from .ntstatus import NTStatus
from .wire import Buffer, check_structure_size

__all__ = [
    "CONN_TRANSITIONS",
    "REQUEST_TRANSITIONS",
    "SESSION_TRANSITIONS",
    "BindingFailed",
    "Channel",
    "ChannelBound",
    "ClientAuth",
    "ClientConfig",
    "ClientConnection",
    "CloseResult",
    "CompoundResponse",
    "ConnState",
    "Done",
    "InterimResponse",
    "IoctlResult",
    "Negotiated",
    "OutputBuffer",
    "ReadResult",
    "Request",
    "RequestState",
    "RequestTimedOut",
    "Response",
    "Session",
    "SessionEstablished",
    "SessionFailed",
    "SessionState",
    "TreeConnect",
    "WriteResult",
    "channel_signing_key",
]

log = logging.getLogger(__name__)

MiB = 1 << 20
KiB = 1 << 10
#: MessageId of an unsolicited message (an oplock or lease break, MS-SMB2 3.2.5.19).
UNSOLICITED_MESSAGE_ID = 0xFFFFFFFFFFFFFFFF
#: Most messages one received compound may hold before it is called abuse.
MAX_COMPOUND = 64
#: What one READ/WRITE may not go below, whatever the server offers (MS-SMB2 2.2.4: 64 KiB).
MIN_IO = 64 * KiB
SMB3_DIALECTS = (Dialect.SMB_3_0, Dialect.SMB_3_0_2, Dialect.SMB_3_1_1)
#: Statuses a server answers when it no longer has the session's keys: neither signed nor
#: encrypted, and they only fail the request they answer.
UNPROTECTED_STATUSES = frozenset({NTStatus.USER_SESSION_DELETED, NTStatus.NETWORK_SESSION_EXPIRED})
#: Statuses whose response still carries the command's own body (MS-SMB2 3.3.4.4).
_PARTIAL_BODY = frozenset({Command.QUERY_INFO, Command.QUERY_DIRECTORY, Command.IOCTL, Command.READ})
_NEXT_COMMAND = struct.Struct("<I")
_NEXT_COMMAND_OFFSET = 20


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Every limit and policy of the client in one place, with its default and why."""

    #: Dialects offered; the server picks (MS-SMB2 3.2.4.2.2.2). SMB 3.x only: Ferry needs its keys.
    dialects: tuple[int, ...] = (Dialect.SMB_3_1_1, Dialect.SMB_3_0_2, Dialect.SMB_3_0)
    #: Ciphers offered in 3.1.1, preferred first (the server picks; GCM is the fast one).
    ciphers: tuple[int, ...] = (
        crypto.CipherId.AES_128_GCM,
        crypto.CipherId.AES_256_GCM,
        crypto.CipherId.AES_128_CCM,
        crypto.CipherId.AES_256_CCM,
    )
    #: Signing algorithms offered in 3.1.1 (GMAC costs a fraction of CMAC per byte).
    signing_algorithms: tuple[int, ...] = (crypto.SigningAlgorithm.AES_GMAC, crypto.SigningAlgorithm.AES_CMAC)
    #: Sign every request of an unencrypted session even when the server does not require it.
    require_signing: bool = True
    #: Largest READ / WRITE per request (the server's MaxReadSize / MaxWriteSize cap it too);
    #: 8 MiB as Windows 2016 and later: 128 credits with multi-credit requests.
    max_io: int = 8 * MiB
    #: Largest PDU accepted: an 8 MiB READ response, its headers and a TRANSFORM_HEADER.
    max_pdu: int = 8 * MiB + 64 * KiB
    #: Credits to hold, spendable and in flight together: 1024 x 64 KiB = 64 MiB.
    credit_target: int = 1024
    #: READ / WRITE data in flight per connection, in bytes: bounds the memory a transfer holds.
    window_bytes: int = 64 * MiB
    #: Seconds a request may wait (for credits, then for its response) before it fails.
    request_timeout: float = 60.0
    #: Seconds allowed after an interim STATUS_PENDING response: the server is working on it.
    pending_timeout: float = 600.0
    #: Seconds for the TCP connection and NEGOTIATE together.
    connect_timeout: float = 20.0
    #: Seconds a peer may leave sent data unacknowledged, or an idle connection's keepalive
    #: probes unanswered, before the kernel ends the connection (TCP_USER_TIMEOUT and
    #: keepalive): how soon a pulled link fails its channel (and its requests move to the
    #: others), well before ``request_timeout``. None leaves the kernel's defaults (minutes).
    dead_peer_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        if not self.dialects or any(d not in SMB3_DIALECTS for d in self.dialects):
            raise ValueError(f"dialects must be SMB 3.x dialects, not {self.dialects!r}")
        for cipher in self.ciphers:
            crypto.CipherId(cipher)
        if not self.signing_algorithms:
            raise ValueError("at least one signing algorithm")
        for algorithm in self.signing_algorithms:
            crypto.SigningAlgorithm(algorithm)
        if self.max_io < MIN_IO:
            raise ValueError(f"max_io must be at least {MIN_IO}")
        if not self.max_io + 1024 <= self.max_pdu <= (1 << 24) - 1:
            raise ValueError("max_pdu must hold a full READ response and fit Direct TCP framing")
        if self.credit_target < credit_charge(self.max_io, 0) or self.window_bytes < MIN_IO:
            raise ValueError(
                "credit_target must pay for a READ of max_io and window_bytes be at least 64 KiB"
            )
        if min(self.request_timeout, self.pending_timeout, self.connect_timeout) <= 0 or (
            self.dead_peer_timeout is not None and self.dead_peer_timeout < 1
        ):
            raise ValueError("timeouts must be positive (and dead_peer_timeout at least a second)")


class ClientAuth(Protocol):
    """One SESSION_SETUP exchange from the client side (:class:`smbcore.auth.ClientAuthenticator`)."""

    @property
    def complete(self) -> bool: ...

    @property
    def session_key(self) -> bytes: ...

    def step(self, in_token: bytes | None = None) -> bytes: ...


# -- state machines ------------------------------------------------------------------------------


class ConnState(enum.Enum):
    IDLE = "idle"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"
    FAILED = "failed"


class _ConnInput(enum.Enum):
    SEND_NEGOTIATE = "send-negotiate"
    NEGOTIATED = "negotiated"
    CLOSE = "close"
    PROTOCOL_ERROR = "protocol-error"


#: The connection's transition table.
CONN_TRANSITIONS: dict[tuple[ConnState, _ConnInput], ConnState] = {
    (ConnState.IDLE, _ConnInput.SEND_NEGOTIATE): ConnState.NEGOTIATING,
    (ConnState.NEGOTIATING, _ConnInput.NEGOTIATED): ConnState.READY,
    **{
        (s, _ConnInput.CLOSE): ConnState.CLOSED
        for s in (ConnState.IDLE, ConnState.NEGOTIATING, ConnState.READY)
    },
    (ConnState.CLOSED, _ConnInput.CLOSE): ConnState.CLOSED,
    (ConnState.FAILED, _ConnInput.CLOSE): ConnState.FAILED,
    **{
        (s, _ConnInput.PROTOCOL_ERROR): ConnState.FAILED
        for s in (ConnState.IDLE, ConnState.NEGOTIATING, ConnState.READY, ConnState.FAILED)
    },
}


class RequestState(enum.Enum):
    QUEUED = "queued"  # waiting for credits (or for the ones before it)
    SENT = "sent"
    PENDING = "pending"  # an interim STATUS_PENDING response came; the final one follows
    DONE = "done"
    TIMED_OUT = "timed-out"
    DROPPED = "dropped"  # the connection closed first


class _RequestInput(enum.Enum):
    SEND = "send"
    INTERIM = "interim"
    FINAL = "final"
    TIMEOUT = "timeout"
    DROP = "drop"


_LIVE = (RequestState.QUEUED, RequestState.SENT, RequestState.PENDING)
#: A request's transition table.
REQUEST_TRANSITIONS: dict[tuple[RequestState, _RequestInput], RequestState] = {
    (RequestState.QUEUED, _RequestInput.SEND): RequestState.SENT,
    (RequestState.SENT, _RequestInput.INTERIM): RequestState.PENDING,
    (RequestState.PENDING, _RequestInput.INTERIM): RequestState.PENDING,
    (RequestState.SENT, _RequestInput.FINAL): RequestState.DONE,
    (RequestState.PENDING, _RequestInput.FINAL): RequestState.DONE,
    **{(s, _RequestInput.TIMEOUT): RequestState.TIMED_OUT for s in _LIVE},
    **{(s, _RequestInput.DROP): RequestState.DROPPED for s in _LIVE},
}


class SessionState(enum.Enum):
    IN_PROGRESS = "in-progress"
    VALID = "valid"
    EXPIRED = "expired"  # STATUS_NETWORK_SESSION_EXPIRED: keys still good, needs re-authentication
    FAILED = "failed"
    CLOSED = "closed"  # logged off, or deleted by the server


class _SessionInput(enum.Enum):
    ESTABLISHED = "established"
    FAILED = "failed"
    EXPIRED = "expired"
    GONE = "gone"  # LOGOFF done, or STATUS_USER_SESSION_DELETED


#: A session's transition table.
SESSION_TRANSITIONS: dict[tuple[SessionState, _SessionInput], SessionState] = {
    (SessionState.IN_PROGRESS, _SessionInput.ESTABLISHED): SessionState.VALID,
    (SessionState.IN_PROGRESS, _SessionInput.FAILED): SessionState.FAILED,
    (SessionState.VALID, _SessionInput.EXPIRED): SessionState.EXPIRED,
    (SessionState.EXPIRED, _SessionInput.EXPIRED): SessionState.EXPIRED,
    (SessionState.VALID, _SessionInput.GONE): SessionState.CLOSED,
    (SessionState.EXPIRED, _SessionInput.GONE): SessionState.CLOSED,
    (SessionState.CLOSED, _SessionInput.GONE): SessionState.CLOSED,
}


# -- session, channel, tree ------------------------------------------------------------------------


def channel_signing_key(
    session_key: Buffer, dialect: int, preauth_hash: Buffer | None, cipher: int | None
) -> bytes:
    """Channel.SigningKey for a connection of a session (MS-SMB2 3.2.5.3.1, 3.2.5.3.3).

    The first channel's is Session.SigningKey. A channel bound later derives it the same way
    from the binding exchange's own session key and, in 3.1.1, the binding's pre-auth hash
    (which starts from *that* connection's NEGOTIATE hash); the cipher and application keys
    stay the session's.
    """
    return crypto.derive_session_keys(session_key, dialect, preauth_hash, cipher).signing_key


@dataclass(eq=False)
class Channel:
    """One connection of a session and the key it signs with (MS-SMB2 3.2.1.8)."""

    connection: ClientConnection
    signing_key: bytes = field(repr=False)
    signer: crypto.Signer


@dataclass(eq=False)
class TreeConnect:
    """A share connected in a session (MS-SMB2 3.2.1.4); usable on every channel of it."""

    session: Session = field(repr=False)
    tree_id: int
    share: str
    share_type: int
    share_flags: int
    capabilities: int
    maximal_access: int
    #: The caller asked for encryption on this share even if the server does not require it.
    require_encryption: bool = False
    connected: bool = True

    @property
    def encrypt_data(self) -> bool:
        """The server requires encryption on this share (SMB2_SHAREFLAG_ENCRYPT_DATA)."""
        return bool(self.share_flags & ShareFlags.ENCRYPT_DATA)


@dataclass(eq=False)
class Session:
    """An SMB session (MS-SMB2 3.2.1.3): shared by every channel bound to it."""

    authenticator: ClientAuth = field(repr=False)
    dialect: int
    preauth: crypto.PreauthHash | None = field(repr=False)
    #: The caller asked for every request to be encrypted.
    require_encryption: bool = False
    session_id: int = 0
    state: SessionState = SessionState.IN_PROGRESS
    user: str = ""
    domain: str = ""
    keys: crypto.SessionKeys | None = None
    session_key: bytes = field(default=b"", repr=False)
    cipher: crypto.CipherId | None = None
    signing_required: bool = True
    #: The server requires encryption for the whole session (SMB2_SESSION_FLAG_ENCRYPT_DATA).
    encrypt_data: bool = False
    flags: int = 0
    #: What the first channel negotiated; a channel bound later must have the same.
    signing_algorithm: crypto.SigningAlgorithm = crypto.SigningAlgorithm.AES_CMAC
    server_guid: bytes = b""
    #: Session.ChannelSequence (MS-SMB2 3.2.1.3): in every request's header; one more after
    #: each channel failure, so the server can tell requests sent before it from those after.
    channel_sequence: int = 0
    channels: dict[ClientConnection, Channel] = field(default_factory=dict, repr=False)
    trees: dict[int, TreeConnect] = field(default_factory=dict, repr=False)
    #: The SESSION_SETUP round in flight.
    setup: Request | None = field(default=None, repr=False)

    @property
    def encrypted(self) -> bool:
        """Every request of this session goes encrypted."""
        return self.encrypt_data or self.require_encryption

    def bump_channel_sequence(self) -> int:
        """A channel failed (MS-SMB2 3.2.7.1): requests from now on carry the next
        ChannelSequence (16 bits, wrapping). Returns it."""
        self.channel_sequence = (self.channel_sequence + 1) & 0xFFFF
        return self.channel_sequence

    def channel(self, connection: ClientConnection) -> Channel:
        channel = self.channels.get(connection)
        if channel is None:
            raise LocalProtocolError(f"session {self.session_id:#x} has no channel on this connection")
        return channel

    def _transition(self, event: _SessionInput) -> None:
        nxt = SESSION_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise RemoteProtocolError(f"session {self.session_id:#x}: {event.value} while {self.state.value}")
        self.state = nxt


# -- requests ------------------------------------------------------------------------------------


class _Purpose(enum.Enum):
    CALLER = "caller"
    NEGOTIATE = "negotiate"
    SESSION_SETUP = "session-setup"
    TREE_CONNECT = "tree-connect"
    VALIDATE = "validate-negotiate"
    BIND = "bind"  # a SESSION_SETUP round binding this connection to a session


class Request:
    """One request from queued to answered; the shell keeps it as the key of its waiter.

    ``message_id`` is known once the request is sent (MessageIds follow the credits).
    """

    __slots__ = (
        "_heap_deadline",
        "async_id",
        "body",
        "channel_sequence",
        "charge",
        "command",
        "deadline",
        "encrypt",
        "extra",
        "message_id",
        "path",
        "payload",
        "preauth",
        "purpose",
        "recv_size",
        "related",
        "replay",
        "send_size",
        "session",
        "sign",
        "signer",
        "state",
        "tree",
        "verified",
        "wants_encryption",
    )

    def __init__(
        self,
        command: Command,
        body: Buffer,
        *,
        session: Session | None,
        tree: TreeConnect | None,
        payload: Buffer,
        charge: int,
        send_size: int,
        recv_size: int,
        deadline: float,
        purpose: _Purpose,
    ) -> None:
        self.command = command
        self.body = body
        self.session = session
        self.tree = tree
        self.payload = payload
        self.charge = charge
        self.send_size = send_size
        self.recv_size = recv_size
        self.deadline = deadline
        self._heap_deadline = deadline
        self.purpose = purpose
        self.state = RequestState.QUEUED
        self.message_id: int | None = None
        self.async_id = 0
        self.extra = 0
        self.encrypt = False
        self.sign = False
        self.related = False
        self.verified = False
        self.wants_encryption = False
        self.path = ""
        #: Sent again after its channel failed (SMB2_FLAGS_REPLAY_OPERATION).
        self.replay = False
        #: The ChannelSequence its header carried (set when it is sent).
        self.channel_sequence = 0
        #: The pre-auth hash its bytes go into (a SESSION_SETUP round of 3.1.1), if any.
        self.preauth: crypto.PreauthHash | None = None
        #: Signs it instead of the channel's signer (a binding round: Session.SigningKey).
        self.signer: crypto.Signer | None = None

    def __repr__(self) -> str:
        return f"<Request {self.command.name} mid={self.message_id} {self.state.value}>"

    def _transition(self, event: _RequestInput) -> None:
        nxt = REQUEST_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise RemoteProtocolError(f"{self.command.name} request: {event.value} while {self.state.value}")
        self.state = nxt


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A READ response's data: a slice of the received PDU (no copy)."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class WriteResult:
    count: int


@dataclass(frozen=True, slots=True)
class CloseResult:
    """The attributes CLOSE returned with SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB, else None."""

    times: FileTimes | None


@dataclass(frozen=True, slots=True)
class OutputBuffer:
    """QUERY_INFO / QUERY_DIRECTORY output."""

    data: bytes


@dataclass(frozen=True, slots=True)
class IoctlResult:
    ctl_code: int
    output: bytes


@dataclass(frozen=True, slots=True)
class Done:
    """A response whose body says nothing more (ECHO, FLUSH, LOCK, SET_INFO, LOGOFF, ...)."""


ResponseBody = (
    CreateResponse | TreeConnect | ReadResult | WriteResult | CloseResult | OutputBuffer | IoctlResult | Done
)
B = TypeVar("B", bound=ResponseBody)


@dataclass(frozen=True, slots=True)
class Response:
    """The final response to ``request``; ``body`` is parsed for success (and the partial
    results of STATUS_BUFFER_OVERFLOW), None for an error."""

    request: Request
    header: Header
    body: ResponseBody | None
    message: memoryview = field(repr=False)

    def __post_init__(self) -> None:
        if not self.header.is_response or self.header.status == NTStatus.PENDING:
            raise ValueError("a final response, not a request or an interim response")

    @property
    def status(self) -> int:
        return self.header.status

    def expect(self, kind: type[B]) -> B:
        """The body as ``kind`` (what the request's command returns)."""
        if not isinstance(self.body, kind):
            raise RemoteProtocolError(f"{self.request.command.name} response has no {kind.__name__} body")
        return self.body


@dataclass(frozen=True, slots=True)
class InterimResponse:
    """STATUS_PENDING with an AsyncId: ``request`` goes on, its final response comes later."""

    request: Request
    async_id: int

    def __post_init__(self) -> None:
        if self.async_id == 0:
            raise ValueError("an interim response carries a non-zero AsyncId")


@dataclass(frozen=True, slots=True)
class CompoundResponse:
    """Several responses that arrived in one PDU, in order."""

    parts: tuple[Response | InterimResponse, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise ValueError("a compound has at least two responses")


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """``request`` got no final response in time; a late one will be dropped."""

    request: Request


@dataclass(frozen=True, slots=True)
class Negotiated:
    """NEGOTIATE completed: what this connection will speak."""

    dialect: int
    cipher: crypto.CipherId | None
    signing_algorithm: crypto.SigningAlgorithm
    max_read: int
    max_write: int
    max_transact: int
    server_guid: bytes
    capabilities: int

    def __post_init__(self) -> None:
        if self.dialect not in SMB3_DIALECTS:
            raise ValueError(f"dialect {self.dialect:#06x}")


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    session: Session

    def __post_init__(self) -> None:
        if self.session.state is not SessionState.VALID:
            raise ValueError("an established session is valid")


@dataclass(frozen=True, slots=True)
class ChannelBound:
    """This connection is now a channel of ``session`` (SMB2_SESSION_FLAG_BINDING succeeded)."""

    session: Session


@dataclass(frozen=True, slots=True)
class BindingFailed:
    """Binding this connection to ``session`` failed (the session itself is unaffected)."""

    session: Session
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """SESSION_SETUP failed: the server's ``status`` (or the local reason's stand-in)."""

    session: Session
    status: int
    reason: str


Event = (
    Response
    | InterimResponse
    | CompoundResponse
    | RequestTimedOut
    | Negotiated
    | SessionEstablished
    | SessionFailed
    | ChannelBound
    | BindingFailed
)


@dataclass(eq=False, slots=True)
class _Binding:
    """A binding in progress on one connection: its own authentication and pre-auth hash, and
    Session.SigningKey's signer for its requests."""

    authenticator: ClientAuth
    preauth: crypto.PreauthHash | None
    signer: crypto.Signer


# -- the connection --------------------------------------------------------------------------------


class ClientConnection:
    """The client side of one SMB connection (see the module docstring).

    Hashable by identity: it is the key of its channel in :attr:`Session.channels`.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        client_guid: bytes | None = None,
        server_name: str = "",
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config or ClientConfig()
        self.client_guid = client_guid if client_guid is not None else randbytes(16)
        if len(self.client_guid) != 16:
            raise ValueError("ClientGuid is 16 bytes")
        self.server_name = server_name
        self._randbytes = randbytes
        self.state = ConnState.IDLE
        self.credits = ClientCredits(self.config.credit_target)
        self.preauth = crypto.PreauthHash()
        self.security_mode = SecurityMode.SIGNING_ENABLED | (
            SecurityMode.SIGNING_REQUIRED if self.config.require_signing else 0
        )
        self.capabilities = Capabilities.LARGE_MTU | Capabilities.MULTI_CHANNEL
        if self.config.ciphers:
            self.capabilities |= Capabilities.ENCRYPTION
        # Learnt from NEGOTIATE (MS-SMB2 3.2.1.2).
        self.dialect = 0
        self.cipher: crypto.CipherId | None = None
        self.signing_algorithm = crypto.SigningAlgorithm.AES_CMAC
        self.server_guid = b""
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.server_requires_signing = False
        self.multi_credit = False
        self.max_read = self.max_write = self.max_transact = MIN_IO
        self.gss_token = b""
        self.negotiate_validated = False
        self.sessions: dict[int, Session] = {}
        self._binding: dict[Session, _Binding] = {}
        self._queue: deque[tuple[Request, ...]] = deque()
        self._sent: dict[int, Request] = {}
        self._abandoned: set[int] = set()
        self._timers: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._out: list[tuple[Buffer, ...]] = []
        self._events: list[Event] = []

    __hash__ = object.__hash__

    # -- I/O boundary ----------------------------------------------------------------------------

    def data_to_send(self) -> list[tuple[Buffer, ...]]:
        """Whole PDUs to send in order, each as the buffers that make it up (unframed)."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    def receive_pdu(self, pdu: Buffer, now: float) -> None:
        """Process one PDU. Malformed, unverifiable or unexpected input raises
        :class:`RemoteProtocolError` and fails the connection. A writable ``pdu`` is the
        core's from then on: an encrypted one is decrypted where it lies (a READ's data is
        then a view of it)."""
        if self.state in (ConnState.CLOSED, ConnState.FAILED):
            raise LocalProtocolError(f"the connection is {self.state.value}")
        try:
            self._receive(memoryview(pdu), now)
            self._pump()
        except SMBProtocolError:
            self._transition(_ConnInput.PROTOCOL_ERROR)
            raise

    def close(self) -> list[Request]:
        """The transport is gone (or the application closes it): every request queued or in
        flight is dropped and returned, so the shell can fail its waiters."""
        self._transition(_ConnInput.CLOSE)
        for session in self.sessions.values():
            session.channels.pop(self, None)  # the session lives on in its other channels
        self._binding.clear()
        dropped = [r for group in self._queue for r in group] + list(self._sent.values())
        self._queue.clear()
        self._sent.clear()
        self._timers.clear()
        for request in dropped:
            request._transition(_RequestInput.DROP)
            request.payload = b""
        return dropped

    # -- timers ----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (the earliest request deadline), or None."""
        timers = self._timers
        while timers and (timers[0][2].state not in _LIVE or timers[0][2]._heap_deadline != timers[0][0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        """Fail the requests whose deadline has passed: :class:`RequestTimedOut` events (a
        timed-out SESSION_SETUP round fails its session instead)."""
        expired: list[Request] = []
        while (deadline := self.get_timer()) is not None and deadline <= now:
            expired.append(heapq.heappop(self._timers)[2])
        try:
            for request in expired:
                self._time_out(request)
            self._pump()
        except SMBProtocolError:
            self._transition(_ConnInput.PROTOCOL_ERROR)
            raise

    def _arm(self, request: Request, deadline: float) -> None:
        request.deadline = request._heap_deadline = deadline
        heapq.heappush(self._timers, (deadline, next(self._seq), request))

    def _time_out(self, request: Request) -> None:
        was = request.state
        request._transition(_RequestInput.TIMEOUT)
        request.payload = b""
        if was is RequestState.QUEUED:
            self._queue = deque(g for g in self._queue if request not in g)
        elif request.message_id is not None:
            self._sent.pop(request.message_id, None)
            self._abandoned.add(request.message_id)  # a late response still grants credits
            if was is RequestState.PENDING:
                self._send_cancel(request)
        log.info(
            "request timed out", extra={"command": request.command.name, "message_id": request.message_id}
        )
        if request.purpose is _Purpose.SESSION_SETUP and request.session is not None:
            self._fail_session(request.session, NTStatus.IO_TIMEOUT, "SESSION_SETUP timed out")
        elif request.purpose is _Purpose.BIND and request.session is not None:
            self._fail_binding(request.session, NTStatus.IO_TIMEOUT, "the binding SESSION_SETUP timed out")
        else:
            self._events.append(RequestTimedOut(request))

    # -- what the caller asks for ----------------------------------------------------------------

    def start_negotiate(self, now: float, timeout: float | None = None) -> Request:
        """Send NEGOTIATE; a :class:`Negotiated` event follows (a refusal is a protocol error)."""
        self._transition(_ConnInput.SEND_NEGOTIATE)
        config = self.config
        contexts: tuple[NegotiateContext, ...] = ()
        if Dialect.SMB_3_1_1 in config.dialects:
            contexts = (PreauthIntegrity((HASH_SHA512,), self._randbytes(32)),)
            if config.ciphers:
                contexts += (EncryptionCapabilities(tuple(config.ciphers)),)
            contexts += (SigningCapabilities(tuple(config.signing_algorithms)),)
            if self.server_name:
                contexts += (NetnameContext(self.server_name),)
        body = NegotiateRequest(
            tuple(config.dialects), self.security_mode, self.capabilities, self.client_guid, contexts
        ).encode()
        request = self._new(
            Command.NEGOTIATE, body, None, None, now, purpose=_Purpose.NEGOTIATE, charge=0, timeout=timeout
        )
        self._enqueue((request,))
        return request

    def start_session(
        self,
        authenticator: ClientAuth,
        now: float,
        *,
        require_encryption: bool = False,
        user: str = "",
        domain: str = "",
    ) -> Session:
        """Authenticate a new session; :class:`SessionEstablished` or :class:`SessionFailed` follows."""
        self._require_ready()
        if require_encryption and self.cipher is None:
            raise SecurityRequirementError(
                "encryption is required but the server negotiated no cipher on this connection"
            )
        session = Session(
            authenticator=authenticator,
            dialect=self.dialect,
            preauth=self.preauth.copy() if self.dialect == Dialect.SMB_3_1_1 else None,
            require_encryption=require_encryption,
            user=user,
            domain=domain,
        )
        try:
            token = authenticator.step(self.gss_token or None)
        except AuthenticationError as exc:
            session._transition(_SessionInput.FAILED)
            self._events.append(SessionFailed(session, exc.status, str(exc)))
            return session
        self._session_setup(session, token, now)
        return session

    def bind_session(self, session: Session, authenticator: ClientAuth, now: float) -> None:
        """Bind this connection to ``session``, established on another connection to the same
        server (MS-SMB2 3.2.4.2.3): :class:`ChannelBound` or :class:`BindingFailed` follows.

        The connection must have negotiated what the session's first channel did (dialect, and
        in 3.1.1 cipher and signing algorithm) with the same server; ``authenticator`` is a
        fresh one for the same user."""
        self._require_ready()
        if session.state is not SessionState.VALID or session.keys is None:
            raise LocalProtocolError(f"session {session.session_id:#x} is {session.state.value}, not valid")
        if self in session.channels or session in self._binding:
            raise LocalProtocolError("this connection is already a channel of the session, or binding")
        if self.server_guid != session.server_guid:
            raise LocalProtocolError("the session belongs to another server (its ServerGuid differs)")
        if self.dialect != session.dialect or (
            self.dialect == Dialect.SMB_3_1_1
            and (self.cipher != session.cipher or self.signing_algorithm != session.signing_algorithm)
        ):
            raise LocalProtocolError(
                "this connection negotiated another dialect, cipher or signing algorithm than the session"
            )
        binding = _Binding(
            authenticator,
            self.preauth.copy() if self.dialect == Dialect.SMB_3_1_1 else None,
            crypto.make_signer(self.signing_algorithm, session.keys.signing_key),
        )
        try:
            token = authenticator.step(self.gss_token or None)
        except AuthenticationError as exc:
            self._events.append(BindingFailed(session, exc.status, str(exc)))
            return
        self._binding[session] = binding
        self._bind_round(session, binding, token, now)

    def tree_connect(
        self, session: Session, share: str, now: float, *, require_encryption: bool = False
    ) -> Request:
        """TREE_CONNECT to ``\\\\server\\share``; the response's body is the new :class:`TreeConnect`."""
        self._require_session(session)
        if require_encryption and self.cipher is None:
            raise SecurityRequirementError("encryption is required but the connection has no cipher")
        path = f"\\\\{self.server_name or 'server'}\\{share}"
        body = TreeConnectRequest(0, path).encode()
        request = self._new(Command.TREE_CONNECT, body, session, None, now, purpose=_Purpose.TREE_CONNECT)
        request.path = share
        request.wants_encryption = require_encryption
        self._protect(request)
        self._enqueue((request,))
        return request

    def validate_negotiate(self, tree: TreeConnect, now: float) -> Request | None:
        """FSCTL_VALIDATE_NEGOTIATE_INFO on ``tree`` (MS-SMB2 3.2.5.5), once per connection of
        dialect 3.0 / 3.0.2; None when there is nothing to validate. A mismatch ends the
        connection."""
        if self.dialect == Dialect.SMB_3_1_1 or self.negotiate_validated:
            return None
        info = ValidateNegotiateInfo(
            self.capabilities, self.client_guid, self.security_mode, tuple(self.config.dialects)
        )
        body = IoctlRequest(CtlCode.FSCTL_VALIDATE_NEGOTIATE_INFO, NO_FILE_ID, info.encode(), 24).encode()
        request = self._new(
            Command.IOCTL, body, tree.session, tree, now, purpose=_Purpose.VALIDATE, recv_size=24
        )
        self._protect(request)
        self._enqueue((request,))
        self.negotiate_validated = True
        return request

    def request(
        self,
        command: Command,
        body: Buffer,
        *,
        session: Session | None,
        tree: TreeConnect | None = None,
        payload: Buffer = b"",
        send_size: int = 0,
        recv_size: int = 0,
        now: float,
        timeout: float | None = None,
        replay: bool = False,
    ) -> Request:
        """Queue one request; it goes out as soon as the credits allow.

        ``body`` is what follows the header; ``payload`` (a WRITE's data) follows ``body`` and
        is neither copied nor joined unless the request is encrypted. ``send_size`` and
        ``recv_size`` are the payload sizes that set the credit charge (MS-SMB2 3.2.4.1.5).
        ``replay`` marks a request sent again after its channel failed (MS-SMB2 3.2.7.1).
        """
        if command in (Command.NEGOTIATE, Command.SESSION_SETUP, Command.CANCEL):
            raise LocalProtocolError(f"{command.name} is sent by the connection itself")
        self._require_ready()
        if session is not None:
            self._require_session(session)
        if tree is not None and (tree.session is not session or not tree.connected):
            raise LocalProtocolError("the tree connect is not part of this session or is disconnected")
        request = self._new(
            command, body, session, tree, now, payload=payload, send_size=send_size, recv_size=recv_size,
            timeout=timeout,
        )  # fmt: skip
        request.replay = replay
        self._protect(request)
        self._enqueue((request,))
        return request

    def compound(
        self,
        parts: Sequence[tuple[Command, Buffer, int, int]],
        *,
        session: Session,
        tree: TreeConnect,
        now: float,
        timeout: float | None = None,
        replay: bool = False,
    ) -> tuple[Request, ...]:
        """Queue related requests (command, body, send_size, recv_size) as one compound
        (MS-SMB2 3.2.4.1.4): the ones after the first name the file ``NO_FILE_ID`` to act on
        the file the first opened. They go out together once the credits for all allow."""
        if len(parts) < 2 or len(parts) > MAX_COMPOUND:
            raise LocalProtocolError(f"a compound of {len(parts)} requests")
        self._require_ready()
        self._require_session(session)
        group = []
        for i, (command, body, send_size, recv_size) in enumerate(parts):
            request = self._new(
                command, body, session, tree, now, send_size=send_size, recv_size=recv_size, timeout=timeout
            )
            request.related = i > 0
            request.replay = replay
            self._protect(request)
            group.append(request)
        self._enqueue(tuple(group))
        return tuple(group)

    def read(
        self,
        tree: TreeConnect,
        file_id: bytes,
        offset: int,
        length: int,
        now: float,
        timeout: float | None = None,
        replay: bool = False,
    ) -> Request:
        """READ ``length`` bytes at ``offset`` (at most :attr:`max_read`)."""
        if not 0 < length <= self.max_read:
            raise LocalProtocolError(f"READ of {length} bytes (at most {self.max_read})")
        body = ReadRequest(49, 0x50, 0, length, offset, file_id, 0, 0, 0, 0, 0).to_bytes() + b"\x00"
        return self.request(
            Command.READ, body, session=tree.session, tree=tree, recv_size=length, now=now, timeout=timeout,
            replay=replay,
        )  # fmt: skip

    def write(
        self,
        tree: TreeConnect,
        file_id: bytes,
        offset: int,
        data: Buffer,
        now: float,
        timeout: float | None = None,
        replay: bool = False,
    ) -> Request:
        """WRITE ``data`` at ``offset`` (at most :attr:`max_write` bytes); ``data`` is sent
        from where it is and must not change until the response arrives."""
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        if not 0 < len(view) <= self.max_write:
            raise LocalProtocolError(f"WRITE of {len(view)} bytes (at most {self.max_write})")
        head = WriteRequest(offset, file_id, memoryview(view)).encode_head()
        return self.request(
            Command.WRITE, head, session=tree.session, tree=tree, payload=view, send_size=len(view),
            now=now, timeout=timeout, replay=replay,
        )  # fmt: skip

    def cancel(self, request: Request) -> None:
        """Ask the server to stop a request it is working on (MS-SMB2 3.2.4.24); its final
        response (often STATUS_CANCELLED) still comes."""
        if request.state not in (RequestState.SENT, RequestState.PENDING):
            raise LocalProtocolError(f"cannot cancel a request that is {request.state.value}")
        self._send_cancel(request)

    # -- building requests -----------------------------------------------------------------------

    def _transition(self, event: _ConnInput) -> None:
        nxt = CONN_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"connection: {event.value} while {self.state.value}")
        self.state = nxt

    def _require_ready(self) -> None:
        if self.state is not ConnState.READY:
            raise LocalProtocolError(f"the connection is {self.state.value}, not ready")

    def _require_session(self, session: Session) -> None:
        if session.state is not SessionState.VALID or self not in session.channels:
            raise LocalProtocolError(
                f"session {session.session_id:#x} is {session.state.value} on this connection"
            )

    def _new(
        self,
        command: Command,
        body: Buffer,
        session: Session | None,
        tree: TreeConnect | None,
        now: float,
        *,
        purpose: _Purpose = _Purpose.CALLER,
        payload: Buffer = b"",
        send_size: int = 0,
        recv_size: int = 0,
        charge: int | None = None,
        timeout: float | None = None,
    ) -> Request:
        if charge is None:
            charge = credit_charge(send_size, recv_size, multi_credit=self.multi_credit)
        if send_size > self.max_transact and command is not Command.WRITE:
            raise LocalProtocolError(
                f"{command.name} input of {send_size} bytes (at most {self.max_transact})"
            )
        deadline = now + (self.config.request_timeout if timeout is None else timeout)
        return Request(
            command, body, session=session, tree=tree, payload=payload, charge=charge, send_size=send_size,
            recv_size=recv_size, deadline=deadline, purpose=purpose,
        )  # fmt: skip

    def _protect(self, request: Request) -> None:
        """Decide signing and encryption (MS-SMB2 3.2.4.1.1, 3.2.4.1.8)."""
        session, tree = request.session, request.tree
        if session is None or session.state is SessionState.IN_PROGRESS:
            return
        encrypt = session.encrypted or (tree is not None and (tree.encrypt_data or tree.require_encryption))
        if encrypt and (self.cipher is None or session.keys is None):
            raise SecurityRequirementError("encryption is required but the connection has no cipher")
        request.encrypt = encrypt
        request.sign = not encrypt and (session.signing_required or self.config.require_signing)

    def _enqueue(self, group: tuple[Request, ...]) -> None:
        cost = sum(max(r.charge, 1) for r in group)
        if not self._queue and not self._sent and not self.credits.can_send(cost):
            for request in group:
                request._transition(_RequestInput.DROP)
            raise LocalProtocolError(
                f"{group[0].command.name} needs {cost} credits; the connection holds {self.credits.available}"
                " and has nothing in flight to earn more"
            )
        for request in group:
            self._arm(request, request.deadline)
        self._queue.append(group)
        self._pump()

    def _pump(self) -> None:
        """Send queued requests, in order, while the credits allow."""
        queue = self._queue
        while queue and self.state in (ConnState.NEGOTIATING, ConnState.READY):
            group = queue[0]
            cost = sum(max(r.charge, 1) for r in group)
            if not self.credits.can_send(cost):
                if self.credits.in_flight == 0 and not self._sent:
                    raise RemoteProtocolError(
                        f"the server left the client {self.credits.available} credits with nothing in flight"
                        f" and {cost} needed",
                        NTStatus.INVALID_NETWORK_RESPONSE,
                    )
                return
            queue.popleft()
            self._build(group)

    def _build(self, group: tuple[Request, ...]) -> None:
        """Give the requests MessageIds, then chain, sign or encrypt them into one PDU."""
        heads: list[bytearray] = []
        first = group[0]
        session, encrypt = first.session, first.encrypt
        # ChannelSequence (MS-SMB2 2.2.1.2): every dialect the client speaks is 3.x.
        channel_sequence = session.channel_sequence if session is not None else 0
        for request in group:
            message_id, credit_request, extra = self.credits.take(request.charge)
            request.message_id, request.extra = message_id, extra
            request.channel_sequence = channel_sequence
            tree_id = request.tree.tree_id if request.tree is not None else 0
            flags = Flags.RELATED_OPERATIONS if request.related and len(group) > 1 else 0
            if request.replay:
                flags |= Flags.REPLAY_OPERATION
            head = bytearray(HEADER_SIZE + len(request.body))
            Header(
                credit_charge=request.charge, status=channel_sequence, command=request.command,
                credits=credit_request, flags=flags, message_id=message_id,
                reserved_or_async=Header.sync_field(tree_id),
                session_id=session.session_id if session is not None else 0,
            ).encode_into(head)  # fmt: skip
            head[HEADER_SIZE:] = request.body
            heads.append(head)
        for head in heads[:-1]:
            head.extend(bytes(-len(head) % 8))
            _NEXT_COMMAND.pack_into(head, _NEXT_COMMAND_OFFSET, len(head))
        payload = group[-1].payload
        for request, head in zip(group, heads, strict=True):
            if request.sign:
                assert session is not None
                signer = request.signer or session.channel(self).signer
                if request is group[-1] and payload:
                    signer.sign_parts_in_place(head, payload)
                else:
                    signer.sign_in_place(head)
            if request.purpose is _Purpose.NEGOTIATE:
                self.preauth.update(head)
            elif request.preauth is not None:
                request.preauth.update(head)
            request._transition(_RequestInput.SEND)
            request.body = b""
            request.payload = b""
            assert request.message_id is not None
            self._sent[request.message_id] = request
        if encrypt:
            assert session is not None
            assert session.keys is not None
            assert self.cipher is not None
            plain = b"".join((*heads, payload)) if payload or len(heads) > 1 else heads[0]
            nonce = crypto.random_nonce(self.cipher, self._randbytes)
            key = session.keys.encryption_key(server=False)
            self._out.append((crypto.encrypt(plain, key, self.cipher, session.session_id, nonce),))
        elif payload:
            self._out.append((*heads, payload))
        else:
            self._out.append(tuple(heads))

    def _send_cancel(self, request: Request) -> None:
        """SMB2 CANCEL (MS-SMB2 3.2.4.24): no credits, the request's MessageId, its AsyncId if known."""
        assert request.message_id is not None
        session = request.session
        flags = Flags.ASYNC_COMMAND if request.async_id else 0
        tree_id = request.tree.tree_id if request.tree is not None else 0
        head = bytearray(
            Header(
                command=Command.CANCEL, flags=flags, message_id=request.message_id,
                reserved_or_async=request.async_id or Header.sync_field(tree_id),
                session_id=session.session_id if session is not None else 0,
            ).to_bytes() + EMPTY4
        )  # fmt: skip
        if session is None or session.state is SessionState.IN_PROGRESS or self not in session.channels:
            self._out.append((head,))
        elif request.encrypt and session.keys is not None and self.cipher is not None:
            nonce = crypto.random_nonce(self.cipher, self._randbytes)
            key = session.keys.encryption_key(server=False)
            self._out.append((crypto.encrypt(head, key, self.cipher, session.session_id, nonce),))
        else:
            if request.sign:
                session.channel(self).signer.sign_in_place(head)
            self._out.append((head,))

    # -- receiving ---------------------------------------------------------------------------------

    def _receive(self, view: memoryview, now: float) -> None:
        if len(view) < 4:
            raise RemoteProtocolError(f"PDU of {len(view)} bytes", NTStatus.INVALID_NETWORK_RESPONSE)
        protocol = bytes(view[:4])
        encrypted_by: Session | None = None
        if protocol == TRANSFORM_PROTOCOL_ID:
            view, encrypted_by = crypto.decrypt_received(view, self.cipher, self.sessions.get, server=False)
        elif protocol != PROTOCOL_ID:
            raise RemoteProtocolError(
                f"unexpected protocol id {protocol.hex()}", NTStatus.INVALID_NETWORK_RESPONSE
            )
        parts: list[Response | InterimResponse] = []
        offset = 0
        while True:
            header = decode_header(view, offset)
            if not header.is_response:
                raise RemoteProtocolError("a request sent to the client", NTStatus.INVALID_NETWORK_RESPONSE)
            nxt = header.next_command
            end = offset + nxt if nxt else len(view)
            if nxt and (nxt % 8 or nxt < HEADER_SIZE or end > len(view)):
                raise RemoteProtocolError(
                    f"NextCommand {nxt} at offset {offset}", NTStatus.INVALID_NETWORK_RESPONSE
                )
            event = self._on_message(header, view[offset:end], encrypted_by, now)
            if event is not None:
                parts.append(event)
            if not nxt:
                break
            offset = end
            if offset // HEADER_SIZE > MAX_COMPOUND:
                raise RemoteProtocolError("compound response too long", NTStatus.INVALID_NETWORK_RESPONSE)
        if len(parts) == 1:
            self._events.append(parts[0])
        elif parts:
            self._events.append(CompoundResponse(tuple(parts)))

    def _on_message(
        self, header: Header, message: memoryview, encrypted_by: Session | None, now: float
    ) -> Response | InterimResponse | None:
        if header.message_id == UNSOLICITED_MESSAGE_ID:
            if header.command == Command.OPLOCK_BREAK:
                log.info("oplock or lease break ignored: this client holds neither")
                return None
            raise RemoteProtocolError(
                f"unsolicited {Command(header.command).name}", NTStatus.INVALID_NETWORK_RESPONSE
            )
        request = self._sent.get(header.message_id)
        if request is None:
            if header.message_id in self._abandoned:
                self.credits.granted(header.credits)
                if header.status != NTStatus.PENDING:
                    self._abandoned.discard(header.message_id)
                return None
            raise RemoteProtocolError(
                f"response to MessageId {header.message_id}, which is not outstanding",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        if header.command != request.command:
            raise RemoteProtocolError(
                f"{Command(header.command).name} response to a {request.command.name} request",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        self.credits.granted(header.credits)
        if request.state is RequestState.SENT:
            self.credits.responded(request.charge, request.extra)
        if header.status == NTStatus.PENDING:
            if not header.is_async or header.async_id == 0:
                raise RemoteProtocolError(
                    "STATUS_PENDING without an AsyncId", NTStatus.INVALID_NETWORK_RESPONSE
                )
            request._transition(_RequestInput.INTERIM)
            request.async_id = header.async_id
            self._arm(request, now + self.config.pending_timeout)
            return InterimResponse(request, header.async_id)
        if request.purpose is _Purpose.NEGOTIATE:
            self._finish(request)
            self._on_negotiate(header, message)
            return None
        if request.purpose is _Purpose.SESSION_SETUP:
            self._finish(request)
            self._on_session_setup(request, header, message, encrypted_by, now)
            return None
        if request.purpose is _Purpose.BIND:
            self._finish(request)
            self._on_bind(request, header, message, encrypted_by, now)
            return None
        self._check_protection(request, header, message, encrypted_by)
        body = self._parse_body(request, header, message)
        self._finish(request)
        self._after(request, header, body)
        return Response(request, header, body, message)

    def _finish(self, request: Request) -> None:
        assert request.message_id is not None
        del self._sent[request.message_id]
        request._transition(_RequestInput.FINAL)

    def _check_protection(
        self, request: Request, header: Header, message: memoryview, encrypted_by: Session | None
    ) -> None:
        """Signature and encryption rules for a final response (MS-SMB2 3.2.5.1.3)."""
        session = request.session
        if encrypted_by is not None:
            if session is not None and session is not encrypted_by:
                raise RemoteProtocolError("response encrypted for another session", NTStatus.ACCESS_DENIED)
            request.verified = True
            return
        if session is None or session.keys is None:
            return
        unprotected_ok = header.status in UNPROTECTED_STATUSES
        if request.encrypt and not unprotected_ok:
            raise RemoteProtocolError(
                f"unencrypted {request.command.name} response to an encrypted request", NTStatus.ACCESS_DENIED
            )
        if header.flags & Flags.SIGNED:
            channel = session.channels.get(self)
            if channel is None or not channel.signer.verify(message):
                raise RemoteProtocolError(
                    f"{request.command.name} response signature does not verify", NTStatus.INVALID_SIGNATURE
                )
            request.verified = True
        elif (request.sign or session.signing_required) and not unprotected_ok:
            raise RemoteProtocolError(
                f"unsigned {request.command.name} response on a signed session", NTStatus.ACCESS_DENIED
            )

    def _parse_body(self, request: Request, header: Header, message: memoryview) -> ResponseBody | None:
        status, command = header.status, request.command
        if status != NTStatus.SUCCESS and not (
            status == NTStatus.BUFFER_OVERFLOW and command in _PARTIAL_BODY
        ):
            error = ErrorResponse.decode(message, HEADER_SIZE)
            check_structure_size("ERROR response", error.structure_size, 9)
            return None
        if command is Command.CREATE:
            return CreateResponse.decode(message)
        if command is Command.READ:
            data = decode_read_response(message)
            if len(data) > request.recv_size:
                raise RemoteProtocolError(
                    f"READ returned {len(data)} bytes for {request.recv_size}",
                    NTStatus.INVALID_NETWORK_RESPONSE,
                )
            return ReadResult(data)
        if command is Command.WRITE:
            count = decode_write_response(message)
            if count > request.send_size:
                raise RemoteProtocolError(
                    f"WRITE of {request.send_size} bytes reports {count}", NTStatus.INVALID_NETWORK_RESPONSE
                )
            return WriteResult(count)
        if command is Command.CLOSE:
            return CloseResult(decode_close_response(message))
        if command in (Command.QUERY_INFO, Command.QUERY_DIRECTORY):
            output = decode_output_buffer_response(message)
            if request.recv_size and len(output) > request.recv_size:
                raise RemoteProtocolError(
                    f"{command.name} returned {len(output)} bytes for {request.recv_size}",
                    NTStatus.INVALID_NETWORK_RESPONSE,
                )
            return OutputBuffer(output)
        if command is Command.IOCTL:
            return IoctlResult(*decode_ioctl_response(message))
        if command is Command.TREE_CONNECT:
            return self._new_tree(request, header, TreeConnectResponse.parse(message))
        if command is Command.SET_INFO:
            decode_set_info_response(message)
            return Done()
        Empty4.parse(message, f"{command.name} response")
        return Done()

    def _after(self, request: Request, header: Header, body: ResponseBody | None) -> None:
        """What a final response changes in the session or tree state."""
        session, status = request.session, header.status
        if session is not None:
            if status == NTStatus.NETWORK_SESSION_EXPIRED and session.state is SessionState.VALID:
                session._transition(_SessionInput.EXPIRED)
            elif status == NTStatus.USER_SESSION_DELETED or (
                request.command is Command.LOGOFF and status == NTStatus.SUCCESS
            ):
                self._drop_session(session)
        if request.tree is not None and (
            status == NTStatus.NETWORK_NAME_DELETED
            or (request.command is Command.TREE_DISCONNECT and status == NTStatus.SUCCESS)
        ):
            request.tree.connected = False
            request.tree.session.trees.pop(request.tree.tree_id, None)
        if request.purpose is _Purpose.VALIDATE:
            self._on_validate(request, header, body)

    def _drop_session(self, session: Session) -> None:
        if session.state in (SessionState.VALID, SessionState.EXPIRED, SessionState.CLOSED):
            session._transition(_SessionInput.GONE)
        self.sessions.pop(session.session_id, None)
        for tree in session.trees.values():
            tree.connected = False
        session.trees.clear()

    def _new_tree(self, request: Request, header: Header, response: TreeConnectResponse) -> TreeConnect:
        session = request.session
        assert session is not None
        if header.tree_id == 0:
            raise RemoteProtocolError(
                "TREE_CONNECT response without a TreeId", NTStatus.INVALID_NETWORK_RESPONSE
            )
        tree = TreeConnect(
            session=session, tree_id=header.tree_id, share=request.path, share_type=response.share_type,
            share_flags=response.share_flags, capabilities=response.capabilities,
            maximal_access=response.maximal_access, require_encryption=request.wants_encryption,
        )  # fmt: skip
        if tree.encrypt_data and self.cipher is None:
            raise RemoteProtocolError(
                f"share {request.path} requires encryption on a connection without a cipher",
                NTStatus.ACCESS_DENIED,
            )
        session.trees[tree.tree_id] = tree
        return tree

    # -- NEGOTIATE (MS-SMB2 3.2.5.2) ---------------------------------------------------------------

    def _on_negotiate(self, header: Header, message: memoryview) -> None:
        if header.status != NTStatus.SUCCESS:
            raise RemoteProtocolError("the server refused NEGOTIATE", header.status)
        response = NegotiateResponse.decode(message)
        config = self.config
        if response.dialect not in config.dialects:
            raise RemoteProtocolError(
                f"the server chose dialect {response.dialect:#06x}, which was not offered",
                NTStatus.NOT_SUPPORTED,
            )
        dialect = Dialect(response.dialect)
        self.dialect = dialect
        self.server_guid = response.server_guid
        self.server_capabilities = response.capabilities
        self.server_security_mode = response.security_mode
        self.server_requires_signing = bool(response.security_mode & SecurityMode.SIGNING_REQUIRED)
        self.multi_credit = bool(response.capabilities & Capabilities.LARGE_MTU)
        cap = config.max_io if self.multi_credit else MIN_IO
        if min(response.max_read_size, response.max_write_size, response.max_transact_size) < MIN_IO:
            raise RemoteProtocolError(
                "the server's MaxReadSize, MaxWriteSize or MaxTransactSize is below 64 KiB",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        self.max_read = min(response.max_read_size, cap)
        self.max_write = min(response.max_write_size, cap)
        self.max_transact = min(response.max_transact_size, cap)
        self.gss_token = response.security_buffer
        if dialect == Dialect.SMB_3_1_1:
            self._negotiate_contexts(response)
            self.preauth.update(message)
        else:
            ccm = crypto.CipherId.AES_128_CCM  # the only cipher of 3.0 and 3.0.2
            offered = ccm in config.ciphers
            self.cipher = ccm if offered and response.capabilities & Capabilities.ENCRYPTION else None
            self.signing_algorithm = crypto.SigningAlgorithm.AES_CMAC
        self._transition(_ConnInput.NEGOTIATED)
        sizes = (self.max_read, self.max_write, self.max_transact)
        negotiated = Negotiated(
            dialect, self.cipher, self.signing_algorithm, *sizes, self.server_guid, self.server_capabilities
        )
        self._events.append(negotiated)

    def _negotiate_contexts(self, response: NegotiateResponse) -> None:
        """MS-SMB2 3.2.5.2: exactly one of each context we act on, each naming one thing we offered."""
        kinds = [type(c) for c in response.contexts]
        for kind in (PreauthIntegrity, EncryptionCapabilities, SigningCapabilities):
            if kinds.count(kind) > 1:
                raise RemoteProtocolError(f"NEGOTIATE response with two {kind.__name__} contexts")
        preauth = response.context(PreauthIntegrity)
        if not isinstance(preauth, PreauthIntegrity) or preauth.hash_algorithms != (HASH_SHA512,):
            raise RemoteProtocolError("3.1.1 NEGOTIATE response without SHA-512 pre-auth integrity")
        encryption = response.context(EncryptionCapabilities)
        self.cipher = None
        if isinstance(encryption, EncryptionCapabilities):
            if len(encryption.ciphers) != 1:
                raise RemoteProtocolError(f"the server chose {len(encryption.ciphers)} ciphers")
            (cipher,) = encryption.ciphers
            if cipher and cipher not in self.config.ciphers:
                raise RemoteProtocolError(f"the server chose cipher {cipher:#06x}, which was not offered")
            self.cipher = crypto.CipherId(cipher) if cipher else None
        signing = response.context(SigningCapabilities)
        self.signing_algorithm = crypto.SigningAlgorithm.AES_CMAC
        if isinstance(signing, SigningCapabilities):
            if len(signing.algorithms) != 1 or signing.algorithms[0] not in self.config.signing_algorithms:
                raise RemoteProtocolError(f"the server chose signing algorithms {signing.algorithms}")
            self.signing_algorithm = crypto.SigningAlgorithm(signing.algorithms[0])

    # -- SESSION_SETUP (MS-SMB2 3.2.4.2.3, 3.2.5.3.1) ----------------------------------------------

    def _session_setup(self, session: Session, token: bytes, now: float) -> None:
        body = SessionSetupRequest(0, self.security_mode & 0xFF, 0, 0, token).encode()
        request = self._new(Command.SESSION_SETUP, body, session, None, now, purpose=_Purpose.SESSION_SETUP)
        request.preauth = session.preauth
        session.setup = request
        self._enqueue((request,))

    def _fail_session(self, session: Session, status: int, reason: str) -> None:
        log.info("session setup failed", extra={"status": NTStatus.name_of(status), "reason": reason})
        if session.state is SessionState.IN_PROGRESS:
            session._transition(_SessionInput.FAILED)
        self.sessions.pop(session.session_id, None)
        session.setup = None
        self._events.append(SessionFailed(session, status, reason))

    def _on_session_setup(
        self, request: Request, header: Header, message: memoryview, encrypted_by: Session | None, now: float
    ) -> None:
        session = request.session
        assert session is not None
        if encrypted_by is not None:
            raise RemoteProtocolError(
                "encrypted response to a new session's SESSION_SETUP", NTStatus.ACCESS_DENIED
            )
        if session.session_id == 0:
            session.session_id = header.session_id
            if header.session_id:
                self.sessions[header.session_id] = session
        elif header.session_id != session.session_id:
            raise RemoteProtocolError(
                "SESSION_SETUP response for another session", NTStatus.INVALID_NETWORK_RESPONSE
            )
        status = header.status
        if status not in (NTStatus.SUCCESS, NTStatus.MORE_PROCESSING_REQUIRED):
            error = ErrorResponse.decode(message, HEADER_SIZE)
            check_structure_size("ERROR response", error.structure_size, 9)
            self._fail_session(session, status, "the server refused the session")
            return
        if header.session_id == 0:
            raise RemoteProtocolError(
                "SESSION_SETUP response without a SessionId", NTStatus.INVALID_NETWORK_RESPONSE
            )
        response = SessionSetupResponse.decode(message)
        authenticator = session.authenticator
        if status == NTStatus.MORE_PROCESSING_REQUIRED:
            if session.preauth is not None:
                session.preauth.update(message)
            try:
                token = authenticator.step(response.security_buffer)
            except AuthenticationError as exc:
                self._fail_session(session, exc.status, str(exc))
                return
            self._session_setup(session, token, now)
            return
        try:
            if response.security_buffer and not authenticator.complete:
                authenticator.step(response.security_buffer)
            session_key = authenticator.session_key
        except SMBProtocolError as exc:
            self._fail_session(session, exc.status, str(exc))
            return
        if response.session_flags & (SessionFlags.IS_GUEST | SessionFlags.IS_NULL):
            self._fail_session(
                session, NTStatus.LOGON_FAILURE, "the server made the session a guest or anonymous one"
            )
            return
        cipher = self.cipher if self.dialect == Dialect.SMB_3_1_1 else None
        keys = crypto.derive_session_keys(
            session_key, self.dialect, session.preauth.value if session.preauth is not None else None, cipher
        )
        signer = crypto.make_signer(self.signing_algorithm, keys.signing_key)
        signing_required = self.config.require_signing or self.server_requires_signing
        if header.flags & Flags.SIGNED:
            if not signer.verify(message):
                raise RemoteProtocolError(
                    "the final SESSION_SETUP response's signature does not verify", NTStatus.INVALID_SIGNATURE
                )
        elif self.dialect == Dialect.SMB_3_1_1 or signing_required:
            raise RemoteProtocolError(
                "the final SESSION_SETUP response is not signed", NTStatus.ACCESS_DENIED
            )
        encrypt_data = bool(response.session_flags & SessionFlags.ENCRYPT_DATA)
        if encrypt_data and self.cipher is None:
            raise RemoteProtocolError(
                "the server requires encryption on a connection without a cipher", NTStatus.ACCESS_DENIED
            )
        session.keys, session.session_key, session.cipher = keys, bytes(session_key), self.cipher
        session.signing_algorithm, session.server_guid = self.signing_algorithm, self.server_guid
        session.signing_required = signing_required
        session.encrypt_data = encrypt_data
        session.flags = response.session_flags
        session.setup = None
        session.channels[self] = Channel(self, keys.signing_key, signer)
        session._transition(_SessionInput.ESTABLISHED)
        self._events.append(SessionEstablished(session))

    # -- binding a channel (MS-SMB2 3.2.4.2.3, 3.2.5.3.1) -------------------------------------------

    def _bind_round(self, session: Session, binding: _Binding, token: bytes, now: float) -> None:
        body = SessionSetupRequest(SessionSetupFlags.BINDING, self.security_mode & 0xFF, 0, 0, token).encode()
        request = self._new(Command.SESSION_SETUP, body, session, None, now, purpose=_Purpose.BIND)
        request.sign, request.signer, request.preauth = True, binding.signer, binding.preauth
        self._enqueue((request,))

    def _fail_binding(self, session: Session, status: int, reason: str) -> None:
        log.info("channel binding failed", extra={"status": NTStatus.name_of(status), "reason": reason})
        self._binding.pop(session, None)
        self._events.append(BindingFailed(session, status, reason))

    def _on_bind(
        self, request: Request, header: Header, message: memoryview, encrypted_by: Session | None, now: float
    ) -> None:
        session = request.session
        assert session is not None
        binding = self._binding.get(session)
        if binding is None:  # the session ended meanwhile
            return
        if encrypted_by is not None or header.session_id != session.session_id:
            raise RemoteProtocolError(
                "binding SESSION_SETUP response encrypted or for another session", NTStatus.ACCESS_DENIED
            )
        status = header.status
        if status not in (NTStatus.SUCCESS, NTStatus.MORE_PROCESSING_REQUIRED):
            error = ErrorResponse.decode(message, HEADER_SIZE)
            check_structure_size("ERROR response", error.structure_size, 9)
            self._fail_binding(session, status, "the server refused to bind the channel")
            return
        response = SessionSetupResponse.decode(message)
        if status == NTStatus.MORE_PROCESSING_REQUIRED:
            # Signed, if at all, with Session.SigningKey: this channel has no key of its own yet.
            if header.flags & Flags.SIGNED and not binding.signer.verify(message):
                raise RemoteProtocolError(
                    "a binding SESSION_SETUP response's signature does not verify", NTStatus.INVALID_SIGNATURE
                )
            if binding.preauth is not None:
                binding.preauth.update(message)
            try:
                token = binding.authenticator.step(response.security_buffer)
            except AuthenticationError as exc:
                self._fail_binding(session, exc.status, str(exc))
                return
            self._bind_round(session, binding, token, now)
            return
        try:
            if response.security_buffer and not binding.authenticator.complete:
                binding.authenticator.step(response.security_buffer)
            session_key = binding.authenticator.session_key
        except SMBProtocolError as exc:
            self._fail_binding(session, exc.status, str(exc))
            return
        key = channel_signing_key(
            session_key,
            self.dialect,
            binding.preauth.value if binding.preauth is not None else None,
            self.cipher if self.dialect == Dialect.SMB_3_1_1 else None,
        )
        signer = crypto.make_signer(self.signing_algorithm, key)
        if not header.flags & Flags.SIGNED or not signer.verify(message):
            raise RemoteProtocolError(
                "the final binding SESSION_SETUP response is not signed with the channel's key",
                NTStatus.INVALID_SIGNATURE,
            )
        del self._binding[session]
        if session.state is not SessionState.VALID:
            self._events.append(BindingFailed(session, NTStatus.USER_SESSION_DELETED, "the session ended"))
            return
        session.channels[self] = Channel(self, key, signer)
        self.sessions[session.session_id] = session
        self._events.append(ChannelBound(session))

    # -- FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.2.5.14.12) ----------------------------------------

    def _on_validate(self, request: Request, header: Header, body: ResponseBody | None) -> None:
        if not request.verified:
            raise RemoteProtocolError("VALIDATE_NEGOTIATE_INFO response neither signed nor encrypted")
        if header.status == NTStatus.ACCESS_DENIED:
            raise RemoteProtocolError("the server refused VALIDATE_NEGOTIATE_INFO", NTStatus.ACCESS_DENIED)
        if not isinstance(body, IoctlResult) or header.status != NTStatus.SUCCESS:
            log.info(
                "VALIDATE_NEGOTIATE_INFO not supported by the server",
                extra={"status": NTStatus.name_of(header.status)},
            )
            return
        info = ValidateNegotiateInfo.decode_response(body.output)
        seen = (self.server_capabilities, self.server_guid, self.server_security_mode, (self.dialect,))
        if (info.capabilities, info.guid, info.security_mode, info.dialects) != seen:
            raise RemoteProtocolError(
                "VALIDATE_NEGOTIATE_INFO does not match NEGOTIATE", NTStatus.ACCESS_DENIED
            )
