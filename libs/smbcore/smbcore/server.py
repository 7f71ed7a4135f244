"""The SMB 3 server core: one :class:`ServerConnection` per transport connection, all of a
server's connections sharing one :class:`ServerState`; sans-IO.

Bytes go in through :meth:`ServerConnection.receive_pdu` (one whole PDU, from the
transport's framing: Direct TCP or SMB Direct); the responses come out of
:meth:`ServerConnection.data_to_send` as PDUs (the transport frames them). Time is never
read here. What the core answers itself: NEGOTIATE (3.0, 3.0.2, 3.1.1 with pre-auth
integrity, cipher and signing contexts), SESSION_SETUP (SPNEGO/NTLMv2 through an
:class:`Authenticator`), LOGOFF, TREE_CONNECT and TREE_DISCONNECT, ECHO, the IOCTLs of the
connection; signing of requests and responses; encryption (TRANSFORM_HEADER) per session
or share; credits; compounds.

File operations (CREATE, READ, WRITE, ...) are validated here (session, tree, open, sizes,
credit charge, related-compound FileIds) and then handed to the shell as
:class:`FileOperation` events (:meth:`ServerConnection.events`); the shell does the I/O and
answers with :meth:`ServerConnection.complete`, after which the core signs or encrypts the
response and carries on with the rest of the compound. An operation that waits (a blocked
LOCK, a CREATE held for an oplock break) gets an interim STATUS_PENDING response and can be
cancelled (CANCEL becomes a :class:`CancelOperation` event).

The server-wide tables live in :class:`ServerState`: sessions (so that a session can be
bound to several connections, Multichannel, MS-SMB2 3.3.5.5.2), opens (which survive the
loss of one channel of their session) and oplocks (granted, broken and acknowledged across
connections). It, its entries and the events are in :mod:`smbcore.serverstate`; this module
re-exports them.

The connection's states and the commands each accepts are the table :data:`ACCEPTS`; a
command outside it is a protocol error answered as MS-SMB2 3.3.5.2 prescribes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from . import crypto
from .auth import AuthenticationError, AuthStep
from .buffers import PoolBuffer
from .config import ServerLimits
from .credits import CreditWindow
from .errors import RemoteProtocolError, SMBProtocolError
from .fileops import (
    CloseRequest,
    CreateContext,
    CreateRequest,
    CreateResponse,
    FileTimes,
    FlushRequest,
    InfoType,
    LockRequest,
    QueryDirectoryRequest,
    QueryInfoRequest,
    ReadRequest,
    SetInfoRequest,
    WriteRequest,
)
from .header import (
    HEADER_SIZE,
    PROTOCOL_ID,
    TRANSFORM_PROTOCOL_ID,
    Command,
    Flags,
    Header,
    decode_header,
)
from .ioctl import (
    NO_FILE_ID,
    CtlCode,
    IoctlRequest,
    NetworkInterfaceInfo,
    ValidateNegotiateInfo,
    encode_interfaces,
    encode_ioctl_response,
)
from .messages import (
    EMPTY4,
    Empty4,
    SessionFlags,
    SessionSetupRequest,
    SessionSetupResponse,
    ShareFlags,
    ShareType,
    TreeConnectRequest,
    TreeConnectResponse,
    encode_error,
)
from .negotiate import (
    Capabilities,
    Dialect,
    EncryptionCapabilities,
    NegotiateRequest,
    NegotiateResponse,
    PreauthIntegrity,
    SecurityMode,
    SigningCapabilities,
)
from .notify import ChangeNotifyRequest
from .ntstatus import NTStatus
from .oplocks import (
    NOTIFICATION_MESSAGE_ID,
    OplockBreak,
    OplockLevel,
    grant_level,
    overwrites,
)
from .serverstate import (
    ACCEPTS,
    ANONYMOUS_LOGON,
    Authenticator,
    CancelOperation,
    Channel,
    ConnState,
    FileOperation,
    FileRequest,
    FileResult,
    Open,
    RequestRecord,
    ServerState,
    Session,
    SessionState,
    Share,
    Tree,
    _Chain,
    _Waiting,
    create_guid,
)

__all__ = [
    "ACCEPTS",
    "ANONYMOUS_LOGON",
    "CIPHER_PREFERENCE",
    "FILE_ALL_ACCESS",
    "SIGNING_PREFERENCE",
    "SUPPORTED_DIALECTS",
    "Authenticator",
    "CancelOperation",
    "Channel",
    "ConnState",
    "FileOperation",
    "FileRequest",
    "FileResult",
    "Open",
    "RequestRecord",
    "ServerConnection",
    "ServerIdentity",
    "ServerPolicy",
    "ServerState",
    "Session",
    "SessionState",
    "Share",
    "Tree",
    "create_guid",
]

log = logging.getLogger(__name__)

SUPPORTED_DIALECTS = (
    Dialect.SMB_3_1_1,
    Dialect.SMB_3_0_2,
    Dialect.SMB_3_0,
    Dialect.SMB_2_1,
    Dialect.SMB_2_0_2,
)
#: SMB 2.0.2 has no multi-credit requests: reads, writes and transactions stop at 64 KiB.
SMB_2_0_2_MAX_IO = 65536
#: Ciphers in the server's order of preference (MS-SMB2 3.3.5.4: the server picks).
CIPHER_PREFERENCE = (
    crypto.CipherId.AES_128_GCM,
    crypto.CipherId.AES_256_GCM,
    crypto.CipherId.AES_128_CCM,
    crypto.CipherId.AES_256_CCM,
)
SIGNING_PREFERENCE = (
    crypto.SigningAlgorithm.AES_GMAC,
    crypto.SigningAlgorithm.AES_CMAC,
    crypto.SigningAlgorithm.HMAC_SHA256,
)
FILE_ALL_ACCESS = 0x001F01FF


# -- what the core is configured with -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    guid: bytes
    start_time: int = 0  # FILETIME; 0 as Windows sends


@dataclass(frozen=True)
class ServerPolicy:
    """Security settings of the server."""

    require_signing: bool = True
    encrypt_all: bool = False
    reject_unencrypted: bool = True  # when encryption applies, refuse plain requests
    #: The lowest dialect accepted. 2.x has no encryption and no pre-auth integrity; it is
    #: accepted by default as Windows and Samba do (raise it to Dialect.SMB_3_0 to refuse).
    min_dialect: int = Dialect.SMB_2_0_2


# -- state -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Binding:
    """A SESSION_SETUP exchange binding this connection to an existing session (3.3.5.5.2)."""

    session: Session
    authenticator: Authenticator
    preauth: crypto.PreauthHash | None


@dataclass
class _Reply:
    """One response being built: header fields and body, signing/encryption decided later."""

    request: Header
    status: int
    body: bytes | bytearray
    session: Session | None
    credits: int = 0
    tree_id: int = 0
    session_id: int = 0
    sign: bool = False
    signer: crypto.Signer | None = None
    encrypt: bool = False
    preauth: crypto.PreauthHash | None = None  # hashed with the response as sent (3.1.1)
    async_id: int = 0


def _session_flags(result: AuthStep) -> int:
    """SessionFlags of a SESSION_SETUP response for this logon (MS-SMB2 2.2.6)."""
    return SessionFlags.IS_NULL if result.anonymous else SessionFlags.IS_GUEST if result.guest else 0


#: The requests whose ChannelSequence is checked and counted (MS-SMB2 3.3.5.2.10).
_MODIFYING = (WriteRequest, SetInfoRequest, IoctlRequest)


Event = FileOperation | CancelOperation


_FILE_DECODERS: dict[Command, Callable[[memoryview], FileRequest]] = {
    Command.CREATE: CreateRequest.decode,
    Command.CLOSE: CloseRequest.parse,
    Command.FLUSH: FlushRequest.parse,
    Command.READ: ReadRequest.parse,
    Command.WRITE: WriteRequest.decode,
    Command.QUERY_DIRECTORY: QueryDirectoryRequest.decode,
    Command.QUERY_INFO: QueryInfoRequest.decode,
    Command.SET_INFO: SetInfoRequest.decode,
    Command.LOCK: LockRequest.decode,
    Command.CHANGE_NOTIFY: ChangeNotifyRequest.parse,
}
#: SET_INFO classes that change a file's data size (break Level II oplocks like a write).
_SIZE_CLASSES = frozenset({19, 20})  # FileAllocationInformation, FileEndOfFileInformation
_NORMALIZED_NAME_CLASS = 48  # FileNormalizedNameInformation
#: SMB2_CREATE_QUERY_MAXIMAL_ACCESS (MS-SMB2 2.2.13.2.5, 2.2.14.2.5): answered with QueryStatus
#: SUCCESS and full access; what a user may really do is decided by the open itself.
_MAXIMAL_ACCESS = b"MxAc"
_MAXIMAL_ACCESS_ANSWER = (0).to_bytes(4, "little") + FILE_ALL_ACCESS.to_bytes(4, "little")


_DIRECTORY_ATTRIBUTE = 0x10
#: Response bodies up to this size are joined to their header; larger ones stay a piece of their own.
_JOIN_LIMIT = 4096

#: One PDU as the buffers it is made of, in order.
Pieces = list[bytes | bytearray | memoryview]


class ServerConnection:
    """The server side of one SMB connection (see the module docstring)."""

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        shares: dict[str, Share] | None = None,
        authenticator_factory: Callable[[], Authenticator],
        initial_token: bytes,
        limits: ServerLimits | None = None,
        policy: ServerPolicy | None = None,
        system_time: Callable[[], int] = lambda: 0,
        randbytes: Callable[[int], bytes] = os.urandom,
        interfaces: Callable[[], list[NetworkInterfaceInfo]] = list,
        server: ServerState | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self.policy = policy or ServerPolicy()
        self.identity = identity
        self.server = server or ServerState(shares=shares)
        self._auth_factory = authenticator_factory
        self._initial_token = initial_token
        self._system_time = system_time
        self._randbytes = randbytes
        self._interfaces = interfaces
        self.state = ConnState.AWAIT_NEGOTIATE
        self.credits = CreditWindow(self.limits.max_credits)
        self.dialect: int = 0
        self.client_guid = b""
        self.client_capabilities = 0
        self.client_security_mode = 0
        self.client_dialects: tuple[int, ...] = ()
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.cipher: crypto.CipherId | None = None
        self.signing_algorithm = crypto.SigningAlgorithm.AES_CMAC
        self.preauth = crypto.PreauthHash()
        #: Connection.SessionTable: the sessions with a channel (or being set up) here.
        self.sessions: dict[int, Session] = {}
        self._bindings: dict[int, _Binding] = {}
        self._out: list[Pieces] = []
        self._events: list[Event] = []
        self._async_ids = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}
        #: Bytes of SMB2 traffic (PDUs, transform headers included, framing not) in each direction.
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- I/O boundary ------------------------------------------------------------------------

    def data_to_send(self) -> list[Pieces]:
        """Whole PDUs to send, in order, each as the pieces it is made of (a large READ's data
        stays the buffer the shell read it into); the transport frames each PDU."""
        out, self._out = self._out, []
        return out

    def receive_pdu(self, pdu: bytes | bytearray | memoryview) -> None:
        """Process one PDU. A malformed PDU closes the connection with :class:`RemoteProtocolError`.

        A writable ``pdu`` is the core's from then on: an encrypted one is decrypted where it
        lies and the requests in it (a WRITE's data) are views of it until they are answered.
        """
        if self.state is ConnState.CLOSED:
            raise RemoteProtocolError("connection closed")
        view = memoryview(pdu)
        self.bytes_received += view.nbytes
        try:
            if bytes(view[:4]) == TRANSFORM_PROTOCOL_ID:
                plain, session = crypto.decrypt_received(view, self.cipher, self.sessions.get, server=True)
                self._process_chain(plain, encrypted_for=session)
            elif bytes(view[:4]) == PROTOCOL_ID:
                self._process_chain(view, encrypted_for=None)
            else:
                raise RemoteProtocolError(f"unsupported protocol id {bytes(view[:4]).hex()}")
        except SMBProtocolError:
            self.connection_lost()
            raise

    def connection_lost(self) -> None:
        """The transport is gone: this channel leaves its sessions; a session with no channel
        left ends with its opens, one that still has channels keeps them (Multichannel)."""
        if self.state is ConnState.CLOSED and not self.sessions:
            return
        self.state = ConnState.CLOSED
        for session in list(self.sessions.values()):
            session.channels.pop(self, None)
            if not session.channels:
                self.server.remove_session(session)
        self.sessions.clear()
        self._bindings.clear()
        for waiting in self._waiting.values():
            self.server.stop_waiting(waiting)

    # -- compounds, signing, encryption ---------------------------------------------------------

    def _process_chain(self, view: memoryview, encrypted_for: Session | None) -> None:
        self._continue(_Chain(view, encrypted_for, received_at=self.server.clock()))

    def _continue(self, chain: _Chain) -> None:
        """Handle the chain's messages from where it stopped, until it ends or waits for a file operation."""
        view = chain.view
        while chain.offset is not None:
            offset = chain.offset
            header = decode_header(view, offset)
            end = offset + header.next_command if header.next_command else len(view)
            if header.next_command and (
                header.next_command % 8 or end > len(view) or end <= offset + HEADER_SIZE
            ):
                raise RemoteProtocolError(f"bad NextCommand {header.next_command} at offset {offset}")
            chain.offset = end if header.next_command else None
            outcome = self._handle(header, view[offset:end], chain)
            if isinstance(outcome, FileOperation):
                self._dispatch(outcome)
                return  # resumed by complete()
            if outcome is not None:
                chain.replies.append(self._as_requested(outcome, chain))
        if chain.replies:
            self._record(chain)
            self._emit(chain.replies)

    def _record(self, chain: _Chain) -> None:
        observer = self.server.on_request
        if observer is None:
            return
        seconds = self.server.clock() - chain.received_at
        for r in chain.replies:
            if r.status == NTStatus.PENDING:
                continue
            tree = r.session.trees.get(r.tree_id) if r.session is not None else None
            share = tree.share.name if tree is not None else None
            command = Command(r.request.command)
            observer(RequestRecord(self, command, r.status, seconds, r.session_id, share, len(r.body)))

    def cancel_session_requests(self, session: Session) -> None:
        """Ask the shell to stop what a closing session's requests wait for on this connection."""
        for waiting in self._waiting.values():
            if waiting.session is session and not waiting.blocked_on:
                self._events.append(CancelOperation(waiting.op.op_id))
                self.server.mark(self)

    def _dispatch(self, op: FileOperation) -> None:
        self._events.append(op)
        self.server.mark(self)
        if op.command is Command.CHANGE_NOTIFY:  # waits for changes: async at once, as Windows
            self._go_async(self._waiting[op.op_id])

    @staticmethod
    def _as_requested(reply: _Reply, chain: _Chain) -> _Reply:
        """An encrypted request gets an encrypted response (MS-SMB2 3.3.4.1.4)."""
        if chain.encrypted_for is not None and reply.session is chain.encrypted_for:
            reply.encrypt, reply.sign = True, False
        return reply

    @staticmethod
    def _header(r: _Reply, related: bool) -> bytearray:
        flags = Flags.SERVER_TO_REDIR | (r.request.flags & Flags.RELATED_OPERATIONS if related else 0)
        if r.async_id:
            flags |= Flags.ASYNC_COMMAND
        return bytearray(
            Header(
                credit_charge=r.request.credit_charge,
                status=r.status,
                command=r.request.command,
                credits=r.credits,
                flags=flags | (Flags.SIGNED if r.sign else 0),
                message_id=r.request.message_id,
                reserved_or_async=r.async_id or Header.sync_field(r.tree_id),
                session_id=r.session_id,
            ).to_bytes()
        )

    def _emit(self, replies: list[_Reply]) -> None:
        """Build the response chain: one compound PDU, each part 8-byte aligned and signed.

        A lone response with a large body (READ data) is not joined to its header: the PDU is
        the two pieces, signed (or encrypted) without copying the data."""
        encrypt_for = next((r.session for r in replies if r.encrypt and r.session is not None), None)
        first = replies[0]
        if len(replies) == 1 and len(first.body) > _JOIN_LIMIT and first.preauth is None:
            head = self._header(first, False)
            if first.sign and first.signer is not None:
                first.signer.sign_parts_in_place(head, first.body)
            self._send([head, first.body], encrypt_for)
            return
        parts: list[bytearray] = []
        for i, r in enumerate(replies):
            msg = self._header(r, bool(i))
            msg += r.body
            parts.append(msg)
        for part in parts[:-1]:
            part.extend(bytes((-len(part)) % 8))
            part[20:24] = len(part).to_bytes(4, "little")  # NextCommand
        for r, msg in zip(replies, parts, strict=True):
            if r.sign and r.signer is not None:
                r.signer.sign_in_place(msg)
            if r.preauth is not None:
                r.preauth.update(msg)
        self._send(list(parts), encrypt_for)

    def _send(self, pieces: Pieces, encrypt_for: Session | None) -> None:
        if encrypt_for is not None and encrypt_for.keys is not None and self.cipher is not None:
            nonce = crypto.random_nonce(self.cipher, self._randbytes)
            key = encrypt_for.keys.encryption_key(server=True)
            session_id, tail = encrypt_for.session_id, pieces[-1]
            if len(pieces) == 2 and isinstance(tail, PoolBuffer) and self.cipher.is_gcm:
                # A READ's data in a pooled buffer is this response's alone: encrypted where it is.
                head = crypto.encrypt_in_place(pieces[0], tail, key, self.cipher, session_id, nonce)
                pieces = [head, tail]
            else:
                pieces = [crypto.encrypt(pieces, key, self.cipher, session_id, nonce)]
        self.bytes_sent += sum(len(piece) for piece in pieces)
        self._out.append(pieces)
        self.server.mark(self)

    # -- dispatch -----------------------------------------------------------------------------

    def _handle(self, header: Header, message: memoryview, chain: _Chain) -> _Reply | FileOperation | None:
        encrypted_for = chain.encrypted_for
        if header.is_response:
            raise RemoteProtocolError("a response sent to the server")
        command = Command(header.command)
        if command not in ACCEPTS[self.state]:
            raise RemoteProtocolError(
                f"{command.name} not allowed in state {self.state.value}", NTStatus.INVALID_PARAMETER
            )
        if command is Command.CANCEL:
            self._cancel(header)
            return None  # CANCEL is never answered itself (MS-SMB2 3.3.5.16)
        self.credits.consume(header.message_id, header.credit_charge)
        credits = self.credits.grant(header.credits)
        if command is Command.NEGOTIATE:
            return self._negotiate(header, message, credits)
        if command is Command.SESSION_SETUP:
            return self._session_setup(header, message, credits, encrypted_for)

        if command is Command.ECHO and header.session_id == 0:
            Empty4.parse(message, "ECHO request")  # ECHO needs no session (MS-SMB2 3.3.5.2.9)
            return self._ok(header, EMPTY4, credits, None)
        session = self.sessions.get(header.session_id)
        if session is None or session.state is not SessionState.VALID:
            return self._session_deleted(header, credits)
        check = self._check_security(header, message, session, encrypted_for)
        if check is not None:
            return self._error(header, check, credits, session)
        if command is Command.LOGOFF:
            Empty4.parse(message, "LOGOFF request")
            reply = self._ok(header, EMPTY4, credits, session)
            self.server.remove_session(session)
            return reply
        if command is Command.ECHO:
            Empty4.parse(message, "ECHO request")
            return self._ok(header, EMPTY4, credits, session)
        if command is Command.TREE_CONNECT:
            return self._tree_connect(header, message, credits, session, encrypted_for)
        tree = session.trees.get(header.tree_id)
        if tree is None:
            return self._error(header, NTStatus.NETWORK_NAME_DELETED, credits, session)
        if tree.share.encrypt and encrypted_for is None and self.policy.reject_unencrypted:
            return self._error(header, NTStatus.ACCESS_DENIED, credits, session)
        if command is Command.IOCTL:
            return self._ioctl(header, message, credits, session, tree, chain)
        if command in _FILE_DECODERS:
            try:
                request = _FILE_DECODERS[command](message)
            except RemoteProtocolError as exc:
                # A malformed body concerns this request only (a bad LockCount, an unknown
                # CreateDisposition): it is refused, the connection carries on (MS-SMB2 3.3.5.2).
                log.info("malformed request", extra={"command": command.name, "error": str(exc)})
                if command is Command.CREATE:
                    chain.failed = exc.status
                return self._error(header, exc.status, credits, session, tree_id=tree.tree_id)
            if isinstance(request, LockRequest) and self.dialect < Dialect.SMB_3_0:
                # LockSequence is checked only for resilient/durable opens before 3.0 (3.3.5.14).
                request = dataclasses.replace(request, lock_sequence=0)
            if (
                isinstance(request, QueryInfoRequest)
                and request.info_type == InfoType.FILE
                and request.info_class == _NORMALIZED_NAME_CLASS
                and self.dialect != Dialect.SMB_3_1_1
            ):  # MS-SMB2 3.3.5.20.1: only 3.1.1 may ask for it
                return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)
            return self._file_operation(header, request, credits, session, tree, chain)
        if command is Command.OPLOCK_BREAK:
            return self._oplock_break_ack(header, message, credits, session, tree)
        if command is Command.TREE_DISCONNECT:
            Empty4.parse(message, "TREE_DISCONNECT request")
            self.server.drop_opens(lambda o: o.tree is tree)
            del session.trees[tree.tree_id]
            return self._ok(header, EMPTY4, credits, session, tree_id=tree.tree_id)
        return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)

    def _session_deleted(self, header: Header, credits: int) -> _Reply:
        """STATUS_USER_SESSION_DELETED keeps the request's SIGNED flag, with no signature (there
        is no key left to sign with): clients skip verifying this status but want the flag
        before they believe it (as Windows and Samba answer)."""
        reply = self._error(header, NTStatus.USER_SESSION_DELETED, credits, None)
        reply.sign = bool(header.flags & Flags.SIGNED)
        return reply

    def _check_security(
        self, header: Header, message: memoryview, session: Session, encrypted_for: Session | None
    ) -> int | None:
        """Signature and encryption rules for a request of a valid session (MS-SMB2 3.3.5.2.4, 3.3.5.2.9)."""
        if encrypted_for is not None:
            if encrypted_for is not session:
                log.info("request encrypted for another session", extra={"session": hex(session.session_id)})
                return NTStatus.ACCESS_DENIED
            return None
        if session.encrypt_data and self.policy.reject_unencrypted:
            log.info("plain request on an encrypted session", extra={"session": hex(session.session_id)})
            return NTStatus.ACCESS_DENIED
        if header.flags & Flags.SIGNED:
            signer = self._channel(session).signer
            if signer is None or not signer.verify(message):
                log.warning("bad signature", extra={"session": hex(session.session_id)})
                return NTStatus.ACCESS_DENIED
        elif session.signing_required:
            log.info("unsigned request on a signed session", extra={"session": hex(session.session_id)})
            return NTStatus.ACCESS_DENIED
        return None

    def _channel(self, session: Session) -> Channel:
        channel = session.channels.get(self)
        if channel is None:  # a VALID session is in this connection's table only through a channel
            raise AssertionError(f"session {session.session_id:#x} has no channel on this connection")
        return channel

    def _ok(
        self,
        header: Header,
        body: bytes | bytearray,
        credits: int,
        session: Session | None,
        *,
        tree_id: int | None = None,
    ) -> _Reply:
        return self._reply(header, NTStatus.SUCCESS, body, credits, session, tree_id)

    def _error(
        self,
        header: Header,
        status: int,
        credits: int,
        session: Session | None,
        *,
        tree_id: int | None = None,
    ) -> _Reply:
        return self._reply(header, status, encode_error(), credits, session, tree_id)

    def _reply(
        self,
        header: Header,
        status: int,
        body: bytes | bytearray,
        credits: int,
        session: Session | None,
        tree_id: int | None,
    ) -> _Reply:
        encrypt = bool(session is not None and session.keys is not None and self._encrypts(session, header))
        channel = session.channels.get(self) if session is not None else None
        sign = (
            session is not None
            and session.state is SessionState.VALID
            and channel is not None
            and channel.signer is not None
            and not encrypt
            and (bool(header.flags & Flags.SIGNED) or session.signing_required)
        )
        return _Reply(
            request=header,
            status=status,
            body=body,
            session=session,
            credits=credits,
            tree_id=header.tree_id if tree_id is None else tree_id,
            session_id=header.session_id,
            sign=sign,
            signer=channel.signer if sign and channel is not None else None,
            encrypt=encrypt,
        )

    def _encrypts(self, session: Session, header: Header) -> bool:
        if session.encrypt_data:
            return True
        tree = session.trees.get(header.tree_id)
        return tree is not None and tree.share.encrypt

    # -- NEGOTIATE (MS-SMB2 3.3.5.3, 3.3.5.4) ----------------------------------------------------

    def _negotiate(self, header: Header, message: memoryview, credits: int) -> _Reply | None:
        req = NegotiateRequest.decode(message)
        common = [d for d in SUPPORTED_DIALECTS if d in req.dialects and d >= self.policy.min_dialect]
        if not common:
            self.state = ConnState.CLOSED
            raise RemoteProtocolError(
                f"no common dialect (client offers {[hex(d) for d in req.dialects]})", NTStatus.NOT_SUPPORTED
            )
        dialect = common[0]
        self.dialect = dialect
        self.client_guid = req.client_guid
        self.client_capabilities = req.capabilities
        self.client_security_mode = req.security_mode
        self.client_dialects = req.dialects
        contexts: list[PreauthIntegrity | EncryptionCapabilities | SigningCapabilities] = []
        capabilities = Capabilities(0)
        if dialect >= Dialect.SMB_2_1:
            capabilities |= Capabilities.LARGE_MTU
        if dialect >= Dialect.SMB_3_0:
            capabilities |= Capabilities.MULTI_CHANNEL
        else:
            self.signing_algorithm = crypto.SigningAlgorithm.HMAC_SHA256
        if dialect == Dialect.SMB_3_1_1:
            preauth = req.context(PreauthIntegrity)
            if not isinstance(preauth, PreauthIntegrity) or 1 not in preauth.hash_algorithms:
                raise RemoteProtocolError(
                    "3.1.1 NEGOTIATE without SHA-512 pre-auth integrity", NTStatus.INVALID_PARAMETER
                )
            contexts.append(PreauthIntegrity((1,), self._randbytes(32)))
            enc = req.context(EncryptionCapabilities)
            if isinstance(enc, EncryptionCapabilities):
                chosen = next((c for c in CIPHER_PREFERENCE if c in enc.ciphers), None)
                self.cipher = chosen
                contexts.append(EncryptionCapabilities((chosen or 0,)))
            sig = req.context(SigningCapabilities)
            if isinstance(sig, SigningCapabilities):
                self.signing_algorithm = next(
                    (a for a in SIGNING_PREFERENCE if a in sig.algorithms), crypto.SigningAlgorithm.AES_CMAC
                )
                contexts.append(SigningCapabilities((self.signing_algorithm,)))
        elif dialect >= Dialect.SMB_3_0 and req.capabilities & Capabilities.ENCRYPTION:
            self.cipher = crypto.CipherId.AES_128_CCM
            capabilities |= Capabilities.ENCRYPTION
        security_mode = SecurityMode.SIGNING_ENABLED | (
            SecurityMode.SIGNING_REQUIRED if self.policy.require_signing else 0
        )
        self.server_capabilities, self.server_security_mode = capabilities, security_mode
        response = NegotiateResponse(
            security_mode=security_mode,
            dialect=dialect,
            server_guid=self.identity.guid,
            capabilities=capabilities,
            max_transact_size=self._io_limit(self.limits.max_transact),
            max_read_size=self._io_limit(self.limits.max_read),
            max_write_size=self._io_limit(self.limits.max_write),
            system_time=self._system_time(),
            server_start_time=self.identity.start_time,
            security_buffer=self._initial_token,
            contexts=tuple(contexts),
        )
        self.state = ConnState.NEGOTIATED
        reply = self._ok(header, response.encode(), credits, None)
        if dialect == Dialect.SMB_3_1_1:
            self.preauth.update(message)
            reply.preauth = self.preauth  # the response is hashed as sent
        return reply

    def _io_limit(self, limit: int) -> int:
        return min(limit, SMB_2_0_2_MAX_IO) if self.dialect == Dialect.SMB_2_0_2 else limit

    # -- SESSION_SETUP (MS-SMB2 3.3.5.5) ---------------------------------------------------------

    def _session_setup(
        self, header: Header, message: memoryview, credits: int, encrypted_for: Session | None
    ) -> _Reply:
        req = SessionSetupRequest.decode(message)
        if self.dialect < Dialect.SMB_3_0 and self.policy.encrypt_all and self.policy.reject_unencrypted:
            return self._error(header, NTStatus.ACCESS_DENIED, credits, None)  # 3.3.5.5 step 1
        if req.binding and header.session_id not in self.sessions:
            return self._bind(header, req, message, credits)
        if header.session_id == 0:
            if len(self.sessions) >= self.limits.max_sessions:
                return self._error(header, NTStatus.INSUFFICIENT_RESOURCES, credits, None)
            session = Session(
                session_id=self.server.new_session_id(),
                dialect=self.dialect,
                authenticator=self._auth_factory(),
                preauth=self.preauth.copy() if self.dialect == Dialect.SMB_3_1_1 else None,
                client_guid=self.client_guid,
                cipher=self.cipher,
                signing_algorithm=self.signing_algorithm,
            )
            self.sessions[session.session_id] = session
            self.server.sessions[session.session_id] = session
        else:
            found = self.sessions.get(header.session_id)
            if found is None:
                return self._session_deleted(header, credits)
            session = found
            if session.state is SessionState.VALID:
                # Re-authentication (MS-SMB2 3.3.5.5.2): signed like any request of the session;
                # one exchange across its rounds; the session's keys stay as they are.
                check = self._check_security(header, message, session, encrypted_for)
                if check is not None:
                    return self._error(header, check, credits, session)
                if not session.reauthenticating:
                    session.authenticator = self._auth_factory()
                    session.reauthenticating = True
        if session.preauth is not None and session.state is SessionState.IN_PROGRESS:
            session.preauth.update(message)
        try:
            result = session.authenticator.step(req.security_buffer)
        except AuthenticationError as exc:
            log.info(
                "authentication failed", extra={"status": NTStatus.name_of(exc.status), "reason": str(exc)}
            )
            # The failure of a re-authentication is signed with the session's key before the
            # session goes (with its opens), as Windows does.
            return self._end_session(header, exc.status, credits, session, signed=session.reauthenticating)
        if not result.complete:
            reply = self._reply(
                header,
                NTStatus.MORE_PROCESSING_REQUIRED,
                SessionSetupResponse(0, result.out_token).encode(),
                credits,
                session,
                0,
            )
            reply.session_id = session.session_id
            if session.state is SessionState.IN_PROGRESS:
                reply.preauth = session.preauth
            return reply
        keyless = result.anonymous or result.guest
        if session.reauthenticating:
            session.reauthenticating = False
            if session.keys is None and not keyless:
                # A null or guest session has no key: as a user's, nothing would protect it.
                log.info(
                    "keyless session re-authenticated as a user", extra={"session": hex(session.session_id)}
                )
                return self._end_session(header, NTStatus.ACCESS_DENIED, credits, session, signed=True)
            # Anyone may become anonymous or guest (as on Windows): fewer rights, the same keys.
            session.user, session.domain = result.user, result.domain
            session.anonymous, session.guest = result.anonymous, result.guest
            log.info(
                "session re-authenticated", extra={"user": session.user, "session": hex(session.session_id)}
            )
            body = SessionSetupResponse(_session_flags(result), result.out_token).encode()
            return self._reply(header, NTStatus.SUCCESS, body, credits, session, 0)
        session.user, session.domain = result.user, result.domain
        if keyless:
            return self._keyless_session(header, credits, session, result)
        assert result.session_key is not None
        session.keys = crypto.derive_session_keys(
            result.session_key,
            self.dialect,
            session.preauth.value if session.preauth is not None else None,
            self.cipher if self.dialect == Dialect.SMB_3_1_1 else None,
        )
        session.signer = crypto.make_signer(self.signing_algorithm, session.keys.signing_key)
        session.channels[self] = Channel(self, session.signer)
        session.signing_required = self.policy.require_signing or bool(
            self.client_security_mode & SecurityMode.SIGNING_REQUIRED
        )
        session.encrypt_data = self.policy.encrypt_all and self.cipher is not None
        session.state = SessionState.VALID
        self._end_previous_session(req.previous_session_id, session)
        flags = SessionFlags.ENCRYPT_DATA if session.encrypt_data else 0
        body = SessionSetupResponse(flags, result.out_token).encode()
        reply = _Reply(
            request=header,
            status=NTStatus.SUCCESS,
            body=body,
            session=session,
            credits=credits,
            session_id=session.session_id,
            sign=True,  # the final response is always signed (3.3.5.5.3)
            signer=session.signer,
        )
        log.info("session established", extra={"user": session.user, "session": hex(session.session_id)})
        return reply

    def _end_session(
        self, header: Header, status: int, credits: int, session: Session, *, signed: bool
    ) -> _Reply:
        """Answer a SESSION_SETUP with ``status`` and end the session it set up (or re-authenticated),
        with its opens. ``signed``: with the session's key, if it has one."""
        reply = self._error(header, status, credits, session if signed else None)
        reply.session_id = session.session_id
        self.server.remove_session(session)
        self.sessions.pop(session.session_id, None)
        return reply

    def _keyless_session(self, header: Header, credits: int, session: Session, result: AuthStep) -> _Reply:
        """An anonymous or guest logon (MS-SMB2 3.3.5.5.3): no keys, so nothing is signed or
        encrypted; the response says which kind it is. The authenticator accepted it because some
        share allows such sessions; TREE_CONNECT refuses the others."""
        session.anonymous, session.guest = result.anonymous, result.guest
        kind = "anonymous" if result.anonymous else "guest"
        if self.policy.encrypt_all:
            log.info(
                "logon refused: every session is encrypted, and this one has no key", extra={"kind": kind}
            )
            return self._end_session(header, NTStatus.ACCESS_DENIED, credits, session, signed=False)
        session.channels[self] = Channel(self, None)
        session.signing_required = False
        session.state = SessionState.VALID
        body = SessionSetupResponse(_session_flags(result), result.out_token).encode()
        log.info("session established", extra={"kind": kind, "session": hex(session.session_id)})
        reply = self._reply(header, NTStatus.SUCCESS, body, credits, session, 0)
        reply.session_id = session.session_id
        return reply

    def _end_previous_session(self, previous_id: int, session: Session) -> None:
        """A client reconnecting names its old session (PreviousSessionId): if the same user
        owns it, it ends now with its opens (MS-SMB2 3.3.5.5.3)."""
        previous = self.server.sessions.get(previous_id) if previous_id else None
        if previous is None or previous is session or previous.state is not SessionState.VALID:
            return
        if (previous.user or "").lower() == (session.user or "").lower() and (
            (previous.domain or "").lower() == (session.domain or "").lower()
        ):
            log.info("previous session ended by reconnect", extra={"session": hex(previous_id)})
            self.server.remove_session(previous)

    # -- session binding (MS-SMB2 3.3.5.5, 3.3.5.5.2): one session over several connections ----

    def _bind(self, header: Header, req: SessionSetupRequest, message: memoryview, credits: int) -> _Reply:
        session = self.server.sessions.get(header.session_id)
        if session is None:
            return self._session_deleted(header, credits)
        binding = self._bindings.get(session.session_id)
        if binding is None:
            status = self._binding_refusal(header, message, session)
            if status is not None:
                return self._binding_error(header, status, credits, session)
            binding = _Binding(
                session,
                self._auth_factory(),
                self.preauth.copy() if self.dialect == Dialect.SMB_3_1_1 else None,
            )
            self._bindings[session.session_id] = binding
        elif (
            not (header.flags & Flags.SIGNED) or session.signer is None or not session.signer.verify(message)
        ):
            del self._bindings[session.session_id]
            return self._binding_error(header, NTStatus.ACCESS_DENIED, credits, session)
        if binding.preauth is not None:
            binding.preauth.update(message)
        try:
            result = binding.authenticator.step(req.security_buffer)
        except AuthenticationError as exc:
            log.info("channel binding authentication failed", extra={"status": NTStatus.name_of(exc.status)})
            del self._bindings[session.session_id]
            return self._binding_error(header, exc.status, credits, session)
        if not result.complete:
            reply = self._binding_error(header, NTStatus.MORE_PROCESSING_REQUIRED, credits, session)
            reply.body = SessionSetupResponse(0, result.out_token).encode()
            reply.preauth = binding.preauth
            return reply
        del self._bindings[session.session_id]
        if (result.user or "").lower() != (session.user or "").lower() or (
            (result.domain or "").lower() != (session.domain or "").lower()
        ):
            log.info("channel binding by another user refused", extra={"session": hex(session.session_id)})
            return self._binding_error(header, NTStatus.ACCESS_DENIED, credits, session)
        if session.state is not SessionState.VALID or session.session_id not in self.server.sessions:
            return self._error(header, NTStatus.USER_SESSION_DELETED, credits, None)
        if len(session.channels) >= self.limits.max_channels:
            return self._binding_error(header, NTStatus.INSUFFICIENT_RESOURCES, credits, session)
        assert result.session_key is not None
        keys = crypto.derive_session_keys(
            result.session_key,
            self.dialect,
            binding.preauth.value if binding.preauth is not None else None,
            self.cipher if self.dialect == Dialect.SMB_3_1_1 else None,
        )
        channel = Channel(self, crypto.make_signer(self.signing_algorithm, keys.signing_key))
        session.channels[self] = channel
        self.sessions[session.session_id] = session
        log.info(
            "channel bound",
            extra={"session": hex(session.session_id), "channels": len(session.channels)},
        )
        return _Reply(
            request=header,
            status=NTStatus.SUCCESS,
            body=SessionSetupResponse(0, result.out_token).encode(),
            session=session,
            credits=credits,
            session_id=session.session_id,
            sign=True,
            signer=channel.signer,
        )

    def _binding_refusal(self, header: Header, message: memoryview, session: Session) -> int | None:
        """The checks before a binding's authentication starts (MS-SMB2 3.3.5.5), in the order
        and with the statuses Windows answers (what smbtorture's bind_negative tests expect):
        a signing algorithm other than the session's is allowed except to or from AES-GMAC;
        no binding on 2.x; the dialect and (3.1.1) the cipher must be the session's. The
        ClientGuid may differ (Windows does not compare it)."""
        if not header.flags & Flags.SIGNED:
            return NTStatus.INVALID_PARAMETER
        if session.anonymous or session.guest:
            return NTStatus.NOT_SUPPORTED  # 3.3.5.5.2: no channels for sessions without a key
        if session.state is not SessionState.VALID or session.signer is None:
            return NTStatus.REQUEST_NOT_ACCEPTED
        if not session.signer.verify(message):
            log.warning("bad signature on a binding request", extra={"session": hex(session.session_id)})
            return NTStatus.ACCESS_DENIED
        if self.signing_algorithm != session.signing_algorithm:
            if session.signing_algorithm == crypto.SigningAlgorithm.AES_GMAC:
                return NTStatus.REQUEST_OUT_OF_SEQUENCE
            if self.signing_algorithm == crypto.SigningAlgorithm.AES_GMAC:
                return NTStatus.NOT_SUPPORTED
        if self.dialect < Dialect.SMB_3_0:
            return NTStatus.REQUEST_NOT_ACCEPTED  # no Multichannel before 3.0
        if self.dialect != session.dialect:
            return NTStatus.INVALID_PARAMETER
        if self.dialect == Dialect.SMB_3_1_1 and self.cipher != session.cipher:
            return NTStatus.INVALID_PARAMETER
        if len(session.channels) >= self.limits.max_channels:
            return NTStatus.INSUFFICIENT_RESOURCES
        return None

    def _binding_error(self, header: Header, status: int, credits: int, session: Session) -> _Reply:
        """Answers to a binding request are signed with Session.SigningKey (the client checks
        them with it, MS-SMB2 3.2.5.1.3), never encrypted."""
        signed = bool(header.flags & Flags.SIGNED) and session.signer is not None
        return _Reply(
            request=header,
            status=status,
            body=encode_error(),
            session=session,
            credits=credits,
            session_id=session.session_id,
            sign=signed,
            signer=session.signer if signed else None,
        )

    # -- file operations: handed to the shell, answered through complete() ---------------------

    def events(self) -> list[Event]:
        """File operations to carry out and cancellations, in order."""
        events, self._events = self._events, []
        return events

    def handles_to_close(self) -> list[object]:
        """Handles of opens the protocol dropped, for the shell to release (server-wide)."""
        return self.server.handles_to_close()

    def _file_operation(
        self, header: Header, request: FileRequest, credits: int, session: Session, tree: Tree, chain: _Chain
    ) -> _Reply | FileOperation:
        command = Command(header.command)
        related = bool(header.flags & Flags.RELATED_OPERATIONS)
        if related and chain.failed is not None:
            return self._error(header, chain.failed, credits, session, tree_id=tree.tree_id)
        status = self._check_io_size(header, request)
        if status is not None:
            return self._error(header, status, credits, session, tree_id=tree.tree_id)
        handle: object | None = None
        file_id: bytes | None = None
        counted: Open | None = None
        break_keys: frozenset[Hashable] = frozenset()
        batch_keys: frozenset[Hashable] = frozenset()
        if isinstance(request, CreateRequest):
            guid = create_guid(request)
            if guid is not None and (same := self.server.by_create_guid.get((session.session_id, guid))):
                # MS-SMB2 3.3.5.9.10: a replay (its first try went down with a channel) gets
                # the open that try made; any other reuse of the CreateGuid is refused.
                if header.flags & Flags.REPLAY_OPERATION and same.tree is tree:
                    chain.last_file_id = same.file_id
                    return self._ok(header, same.create_response, credits, session, tree_id=tree.tree_id)
                return self._error(
                    header, NTStatus.DUPLICATE_OBJECTID, credits, session, tree_id=tree.tree_id
                )
            if len(self.server.opens) >= self.limits.max_opens:
                return self._error(
                    header, NTStatus.INSUFFICIENT_RESOURCES, credits, session, tree_id=tree.tree_id
                )
            break_keys = self.server.break_keys(request)
            batch_keys = self.server.batch_keys() if break_keys else frozenset()
        else:
            file_id = request.file_id
            if related and file_id == NO_FILE_ID:
                file_id = chain.last_file_id
            opened = self.server.opens.get(file_id) if file_id is not None else None
            if opened is None or opened.session is not session or opened.tree is not tree:
                return self._error(header, NTStatus.FILE_CLOSED, credits, session, tree_id=tree.tree_id)
            handle = opened.handle
            if isinstance(request, _MODIFYING) and self.dialect >= Dialect.SMB_3_0:
                if not self._count_channel_sequence(header, opened):
                    return self._error(
                        header, NTStatus.FILE_NOT_AVAILABLE, credits, session, tree_id=tree.tree_id
                    )
                counted = opened
            if isinstance(request, WriteRequest | LockRequest) or (
                isinstance(request, SetInfoRequest) and request.info_class in _SIZE_CLASSES
            ):
                self.server.break_level_two(opened)
        user = session.user if session.user is not None else ANONYMOUS_LOGON
        op = FileOperation(
            self.server.new_op_id(), command, request, tree.share, user, handle, file_id, break_keys,
            batch_keys,
        )  # fmt: skip
        channel = session.channels.get(self)
        signer = channel.signer if channel is not None else None
        self._waiting[op.op_id] = _Waiting(
            chain, op, header, credits, session, tree, signer=signer, counted=counted
        )
        return op

    @staticmethod
    def _count_channel_sequence(header: Header, opened: Open) -> bool:
        """MS-SMB2 3.3.5.2.10, for the modifying requests (WRITE, SET_INFO, IOCTL): False if
        it must be refused with STATUS_FILE_NOT_AVAILABLE. After a channel failed the client
        moves to a newer ChannelSequence and replays there: a request still carrying an
        older one (late from the dead channel) must not reach the file, and a replay must not
        run while requests from before the move still do (the client tries it again). Reads
        are not counted: an old one still running changes nothing a replay could race."""
        ahead = (header.channel_sequence - opened.channel_sequence) & 0xFFFF
        if ahead == 0:
            if header.flags & Flags.REPLAY_OPERATION and opened.outstanding_pre_requests:
                log.info("replay held back by requests from before", extra={"file_id": opened.file_id.hex()})
                return False
            opened.outstanding_requests += 1
            return True
        if ahead >= 0x8000:
            log.info("stale ChannelSequence refused", extra={"file_id": opened.file_id.hex()})
            return False
        opened.outstanding_pre_requests += opened.outstanding_requests
        opened.outstanding_requests = 1
        opened.channel_sequence = header.channel_sequence
        return True

    @staticmethod
    def _uncount(waiting: _Waiting) -> None:
        """A counted request is answered (MS-SMB2 3.3.4.1): it leaves the count it is in."""
        opened = waiting.counted
        if opened is None:
            return
        waiting.counted = None
        if waiting.header.channel_sequence == opened.channel_sequence and opened.outstanding_requests:
            opened.outstanding_requests -= 1
        elif opened.outstanding_pre_requests:
            opened.outstanding_pre_requests -= 1

    def _check_io_size(self, header: Header, request: FileRequest) -> int | None:
        """READ/WRITE within the negotiated sizes and paid for in credits (MS-SMB2 3.3.5.2.5)."""
        if isinstance(request, ChangeNotifyRequest):  # MS-SMB2 3.3.5.19
            size, limit = request.output_length, self._io_limit(self.limits.max_transact)
            return NTStatus.INVALID_PARAMETER if size > limit else None
        if isinstance(request, ReadRequest):
            size, limit = request.length, self._io_limit(self.limits.max_read)
        elif isinstance(request, WriteRequest):
            size, limit = request.length or len(request.data), self._io_limit(self.limits.max_write)
        else:
            return None
        if size > limit:
            return NTStatus.INVALID_PARAMETER
        if max(header.credit_charge, 1) < (max(size, 1) - 1) // 65536 + 1:
            return NTStatus.INVALID_PARAMETER
        return None

    def go_async(self, op_id: int) -> bool:
        """The shell's operation will wait (a blocked LOCK): send the interim STATUS_PENDING
        response now (MS-SMB2 3.3.4.2) so the client extends its timeout and may CANCEL it.

        Only the last operation of a compound goes async (the others wait in place). The
        final answer still comes through :meth:`complete`. Returns whether it went async.
        """
        waiting = self._waiting.get(op_id)
        if waiting is None or self.state is ConnState.CLOSED:
            return False
        return self._go_async(waiting)

    def _go_async(self, waiting: _Waiting) -> bool:
        chain = waiting.chain
        if waiting.async_id or chain.offset is not None:
            return False
        waiting.async_id = next(self._async_ids)
        interim = _Reply(
            request=waiting.header,
            status=NTStatus.PENDING,
            body=encode_error(),
            session=waiting.session,
            credits=waiting.credits,  # the credits go with the interim response, none with the final
            session_id=waiting.header.session_id,
            async_id=waiting.async_id,
        )
        waiting.credits = 0
        chain.replies.append(self._as_requested(interim, chain))
        self._emit(chain.replies)
        chain.replies = []
        return True

    def _cancel(self, header: Header) -> None:
        """MS-SMB2 3.3.5.16: find the request by AsyncId (async form) or MessageId (sync form)."""
        if header.is_async:
            found = next((w for w in self._waiting.values() if w.async_id == header.async_id), None)
        else:
            # By MessageId, async or not: the client may not have seen the interim response yet.
            found = next(
                (w for w in self._waiting.values() if w.header.message_id == header.message_id), None
            )
        if found is None or found.session.session_id != header.session_id:
            return
        if found.blocked_on:  # a CREATE the core holds for an oplock break: the core answers
            self.server.stop_waiting(found)
            self.complete(found.op.op_id, FileResult(NTStatus.CANCELLED))
            return
        self._events.append(CancelOperation(found.op.op_id))
        self.server.mark(self)

    def resume_create(self, waiting: _Waiting) -> None:
        """The oplock breaks a CREATE waited for are done: hand it to the shell again."""
        if self.state is ConnState.CLOSED or waiting.op.op_id not in self._waiting:
            return
        request = waiting.op.request
        assert isinstance(request, CreateRequest)
        op = FileOperation(
            self.server.new_op_id(), waiting.op.command, request, waiting.op.share, waiting.op.user,
            None, None, self.server.break_keys(request), self.server.batch_keys(),
        )  # fmt: skip
        del self._waiting[waiting.op.op_id]
        waiting.op = op
        self._waiting[op.op_id] = waiting
        self._dispatch(op)

    def complete(self, op_id: int, result: FileResult, create: tuple[int, FileTimes] | None = None) -> None:
        """The shell finished a :class:`FileOperation`; answer it and go on with its chain.

        For a successful CREATE, ``create`` is (CreateAction, times) and ``result.handle`` the
        opened file; the core assigns the FileId. On a connection that is gone the result is
        dropped (a handle it carries is released through :meth:`ServerState.handles_to_close`).
        """
        waiting = self._waiting.pop(op_id, None)
        if waiting is not None:
            self._uncount(waiting)  # done with the file, answered or not
        if waiting is None or self.state is ConnState.CLOSED:
            if result.handle is not None:
                self.server.orphan(result.handle)
            return
        chain, op = waiting.chain, waiting.op
        body = result.body
        status = result.status
        if op.command is Command.CREATE:
            if status == NTStatus.OPLOCK_BREAK_IN_PROGRESS:
                self._wait_for_breaks(waiting, result)
                return
            if status == NTStatus.SUCCESS:
                if create is None or result.handle is None:
                    raise ValueError("a successful CREATE needs the handle and (action, times)")
                status, body = self._opened(waiting, result, create)
            if status != NTStatus.SUCCESS:
                chain.failed = status
        elif op.command is Command.CLOSE and status == NTStatus.SUCCESS and op.file_id is not None:
            closed = self.server.opens.get(op.file_id)
            if closed is not None:
                self.server.forget_open(closed)
        # Bodies the shell built for these statuses are sent as they are: data that did not all
        # fit (BUFFER_OVERFLOW), an ERROR body carrying the size needed (BUFFER_TOO_SMALL).
        kept = status in (NTStatus.BUFFER_OVERFLOW, NTStatus.BUFFER_TOO_SMALL) and body
        if status != NTStatus.SUCCESS and not kept:
            body = encode_error()
        reply = self._reply(
            waiting.header, status, body, waiting.credits, waiting.session, waiting.tree.tree_id
        )
        if (
            not reply.sign
            and not reply.encrypt
            and waiting.signer is not None
            and (waiting.header.flags & Flags.SIGNED or waiting.session.signing_required)
        ):  # the session ended (LOGOFF) while this ran: still answered signed, as it was asked
            reply.sign, reply.signer = True, waiting.signer
        reply.async_id = waiting.async_id
        chain.replies.append(self._as_requested(reply, chain))
        try:
            self._continue(chain)
        except SMBProtocolError:
            self.connection_lost()
            raise

    def _opened(
        self, waiting: _Waiting, result: FileResult, create: tuple[int, FileTimes]
    ) -> tuple[int, bytes]:
        """A CREATE succeeded: the new open joins the tables with the oplock it may have."""
        session = waiting.session
        if session.session_id not in self.server.sessions or waiting.tree.tree_id not in session.trees:
            # The session or tree went while the shell opened the file: nobody can use it.
            self.server.orphan(result.handle)
            return NTStatus.NETWORK_NAME_DELETED, b""
        request = waiting.op.request
        assert isinstance(request, CreateRequest)
        opened = Open(
            self.server.new_file_id(), session, waiting.tree, result.handle, self, result.file_key,
            create_guid=create_guid(request), channel_sequence=waiting.header.channel_sequence,
        )  # fmt: skip
        directory = bool(create[1].file_attributes & _DIRECTORY_ATTRIBUTE)
        others = [o.oplock for o in self.server.others_on(opened)]
        level = grant_level(request.oplock_level, others, directory=directory)
        opened.oplock = level if result.file_key is not None else OplockLevel.NONE
        contexts = tuple(
            CreateContext(_MAXIMAL_ACCESS, _MAXIMAL_ACCESS_ANSWER)
            for c in request.contexts
            if c.name == _MAXIMAL_ACCESS
        )[:1]
        body = CreateResponse(
            create[0], create[1], opened.file_id, contexts, oplock_level=opened.oplock
        ).encode()
        opened.create_response = body if opened.create_guid is not None else b""
        self.server.add_open(opened, opened.oplock)
        waiting.chain.last_file_id = opened.file_id
        return NTStatus.SUCCESS, body

    def _wait_for_breaks(self, waiting: _Waiting, result: FileResult) -> None:
        request = waiting.op.request
        assert isinstance(request, CreateRequest)
        self._waiting[waiting.op.op_id] = waiting
        holders = self.server.start_breaks(result.file_key, overwrites(request.disposition))
        if not holders:
            self.resume_create(waiting)
            return
        self.server.wait_for_breaks(self, waiting, holders)
        self._go_async(waiting)

    # -- OPLOCK_BREAK (MS-SMB2 3.3.4.6, 3.3.5.22.1) ----------------------------------------------

    def send_oplock_break(self, holder: Open, level: OplockLevel) -> None:
        """The notification: unsigned, MessageId all ones, no session or tree in the header
        (encrypted for the holder's session when that session encrypts)."""
        header = Header(
            command=Command.OPLOCK_BREAK,
            flags=Flags.SERVER_TO_REDIR,
            message_id=NOTIFICATION_MESSAGE_ID,
        )
        body = OplockBreak(24, level, 0, 0, holder.file_id).to_bytes()
        session = holder.session
        encrypt = session.encrypt_data or holder.tree.share.encrypt
        self._send([header.to_bytes() + body], session if encrypt else None)

    def _oplock_break_ack(
        self, header: Header, message: memoryview, credits: int, session: Session, tree: Tree
    ) -> _Reply:
        ack = OplockBreak.parse(message)
        opened = self.server.opens.get(ack.file_id)
        if opened is None or opened.session is not session or opened.tree is not tree:
            return self._error(header, NTStatus.FILE_CLOSED, credits, session, tree_id=tree.tree_id)
        target = opened.breaking_to
        if target is None:
            return self._error(
                header, NTStatus.INVALID_OPLOCK_PROTOCOL, credits, session, tree_id=tree.tree_id
            )
        if ack.oplock_level not in (OplockLevel.NONE, OplockLevel.LEVEL_II) or ack.oplock_level > target:
            # An acknowledgment to a level higher than the break's ends the oplock.
            self.server.acknowledge(opened, OplockLevel.NONE)
            return self._error(
                header, NTStatus.INVALID_OPLOCK_PROTOCOL, credits, session, tree_id=tree.tree_id
            )
        level = OplockLevel(ack.oplock_level)
        self.server.acknowledge(opened, level)
        body = OplockBreak(24, level, 0, 0, opened.file_id).to_bytes()
        return self._ok(header, body, credits, session, tree_id=tree.tree_id)

    # -- IOCTL (MS-SMB2 3.3.5.15) -----------------------------------------------------------------

    def _ioctl(
        self, header: Header, message: memoryview, credits: int, session: Session, tree: Tree, chain: _Chain
    ) -> _Reply | FileOperation:
        req = IoctlRequest.decode(message)
        if req.ctl_code == CtlCode.FSCTL_PIPE_TRANSCEIVE:
            if tree.share.share_type != ShareType.PIPE:  # MS-SMB2 3.3.5.15.3
                return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)
            # A named pipe write-then-read: carried out by the shell on the pipe's open.
            return self._file_operation(header, req, credits, session, tree, chain)
        if req.ctl_code == CtlCode.FSCTL_VALIDATE_NEGOTIATE_INFO:
            output = self._validate_negotiate(req)
        elif req.ctl_code == CtlCode.FSCTL_QUERY_NETWORK_INTERFACE_INFO:
            interfaces = self._interfaces()
            if not interfaces:
                return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)
            output = encode_interfaces(interfaces)
        else:
            return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)
        if len(output) > req.max_output_response:
            return self._error(header, NTStatus.BUFFER_TOO_SMALL, credits, session, tree_id=tree.tree_id)
        body = encode_ioctl_response(req.ctl_code, req.file_id, output)
        return self._ok(header, body, credits, session, tree_id=tree.tree_id)

    def _validate_negotiate(self, req: IoctlRequest) -> bytes:
        """MS-SMB2 3.3.5.15.12: any difference from what NEGOTIATE saw ends the connection."""
        if self.dialect == Dialect.SMB_3_1_1:
            raise RemoteProtocolError("VALIDATE_NEGOTIATE_INFO on a 3.1.1 connection", NTStatus.ACCESS_DENIED)
        info = ValidateNegotiateInfo.decode(req.input)
        seen = (self.client_capabilities, self.client_guid, self.client_security_mode, self.client_dialects)
        if (info.capabilities, info.guid, info.security_mode, info.dialects) != seen:
            raise RemoteProtocolError(
                "VALIDATE_NEGOTIATE_INFO does not match NEGOTIATE", NTStatus.ACCESS_DENIED
            )
        return ValidateNegotiateInfo(
            self.server_capabilities, self.identity.guid, self.server_security_mode, (self.dialect,)
        ).encode_response()

    # -- TREE_CONNECT (MS-SMB2 3.3.5.7) ----------------------------------------------------------

    def _tree_connect(
        self,
        header: Header,
        message: memoryview,
        credits: int,
        session: Session,
        encrypted_for: Session | None,
    ) -> _Reply:
        req = TreeConnectRequest.decode(message)
        name = req.share_name
        share = self.server.shares.get(name.lower())
        if share is None:
            return self._error(header, NTStatus.BAD_NETWORK_NAME, credits, session)
        if not share.admits(session):
            who = "anonymous" if session.anonymous else "guest" if session.guest else session.user
            log.info("share refused to user", extra={"share": share.name, "user": who})
            return self._error(header, NTStatus.ACCESS_DENIED, credits, session)
        if share.encrypt and self.cipher is None:
            log.info("share needs encryption, connection has no cipher", extra={"share": share.name})
            return self._error(header, NTStatus.ACCESS_DENIED, credits, session)
        tree = Tree(session.next_tree_id, share)
        session.next_tree_id += 1
        session.trees[tree.tree_id] = tree
        flags = ShareFlags.NO_CACHING | (ShareFlags.ENCRYPT_DATA if share.encrypt else 0)
        body = TreeConnectResponse(
            16,
            share.share_type,
            0,
            flags,
            0,
            FILE_ALL_ACCESS if share.share_type == ShareType.DISK else 0x001F01FF,
        ).to_bytes()
        return self._ok(header, body, credits, session, tree_id=tree.tree_id)
