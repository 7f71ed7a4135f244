"""The SMB 3 server core: one :class:`ServerConnection` per transport connection, sans-IO.

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
response and carries on with the rest of the compound. The core owns the open table.

The connection's states and the commands each accepts are the table :data:`ACCEPTS`; a
command outside it is a protocol error answered as MS-SMB2 3.3.5.2 prescribes.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import crypto
from .auth import AuthenticationError, AuthStep
from .config import ServerLimits
from .credits import CreditWindow
from .errors import RemoteProtocolError, SMBProtocolError
from .fileops import (
    CloseRequest,
    CreateRequest,
    CreateResponse,
    FileTimes,
    FlushRequest,
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
from .ntstatus import NTStatus

log = logging.getLogger(__name__)

SUPPORTED_DIALECTS = (Dialect.SMB_3_1_1, Dialect.SMB_3_0_2, Dialect.SMB_3_0)
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


class Authenticator(Protocol):
    """One SPNEGO exchange (:class:`smbcore.auth.ServerAuthenticator`); raises
    :class:`~smbcore.auth.AuthenticationError` with the status to answer on failure."""

    def step(self, token: bytes) -> AuthStep: ...


@dataclass(frozen=True, slots=True)
class Share:
    """A share as the core needs it: name, type, who may connect, encryption."""

    name: str
    share_type: ShareType = ShareType.DISK
    encrypt: bool = False
    users: frozenset[str] | None = None  # None: every authenticated user
    hidden: bool = False
    path: str | None = None  # the folder a disk share serves

    def allows(self, user: str) -> bool:
        return self.users is None or user.lower() in {u.lower() for u in self.users}


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


# -- state -----------------------------------------------------------------------------------


class ConnState(enum.Enum):
    AWAIT_NEGOTIATE = "await-negotiate"
    NEGOTIATED = "negotiated"
    CLOSED = "closed"


#: The connection's transition table: the commands each state accepts.
ACCEPTS: dict[ConnState, frozenset[Command]] = {
    ConnState.AWAIT_NEGOTIATE: frozenset({Command.NEGOTIATE}),
    ConnState.NEGOTIATED: frozenset(Command) - {Command.NEGOTIATE},
    ConnState.CLOSED: frozenset(),
}


class SessionState(enum.Enum):
    IN_PROGRESS = "in-progress"
    VALID = "valid"


@dataclass
class Tree:
    tree_id: int
    share: Share


@dataclass
class Session:
    session_id: int
    dialect: int
    authenticator: Authenticator
    preauth: crypto.PreauthHash | None
    state: SessionState = SessionState.IN_PROGRESS
    user: str | None = None
    domain: str | None = None
    keys: crypto.SessionKeys | None = None
    signer: crypto.Signer | None = None
    signing_required: bool = True
    encrypt_data: bool = False
    trees: dict[int, Tree] = field(default_factory=dict)
    next_tree_id: int = 1
    reauthenticating: bool = False


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
    encrypt: bool = False
    raw_for_preauth: bool = False


@dataclass
class _Chain:
    """A received (possibly compound) PDU being answered; waits while a file operation runs."""

    view: memoryview
    encrypted_for: Session | None
    offset: int | None = 0
    replies: list[_Reply] = field(default_factory=list)
    last_file_id: bytes | None = None  # for related operations (MS-SMB2 3.3.5.2.7.2)
    failed: int | None = None  # status of a failed CREATE, given to the related operations after it


FileRequest = (
    CreateRequest
    | CloseRequest
    | FlushRequest
    | ReadRequest
    | WriteRequest
    | QueryDirectoryRequest
    | QueryInfoRequest
    | SetInfoRequest
    | LockRequest
    | IoctlRequest
)


@dataclass(frozen=True, slots=True)
class FileOperation:
    """An event: a file operation for the shell to carry out, then :meth:`ServerConnection.complete`.

    ``handle`` is what the shell returned when the file was opened (None for CREATE).
    """

    op_id: int
    command: Command
    request: FileRequest
    share: Share
    user: str
    handle: object | None
    file_id: bytes | None


@dataclass(frozen=True, slots=True)
class FileResult:
    """How the shell answers a :class:`FileOperation`: a status and the response body
    (an ERROR body is used for failures), and for CREATE the new handle."""

    status: int
    body: bytes | bytearray = b""
    handle: object | None = None


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A file operation the shell is running, and what its answer needs."""

    chain: _Chain
    op: FileOperation
    header: Header
    credits: int
    session: Session
    tree: Tree


@dataclass
class Open:
    file_id: bytes
    session: Session
    tree: Tree
    handle: object


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
}


class ServerConnection:
    """The server side of one SMB connection (see the module docstring)."""

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        shares: dict[str, Share],
        authenticator_factory: Callable[[], Authenticator],
        initial_token: bytes,
        limits: ServerLimits | None = None,
        policy: ServerPolicy | None = None,
        system_time: Callable[[], int] = lambda: 0,
        session_ids: Callable[[], int] | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
        interfaces: Callable[[], list[NetworkInterfaceInfo]] = list,
    ) -> None:
        self.limits = limits or ServerLimits()
        self.policy = policy or ServerPolicy()
        self.identity = identity
        self.shares = {name.lower(): share for name, share in shares.items()}
        self._auth_factory = authenticator_factory
        self._initial_token = initial_token
        self._system_time = system_time
        self._randbytes = randbytes
        self._interfaces = interfaces
        self._session_ids = session_ids or self._default_session_ids()
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
        self.sessions: dict[int, Session] = {}
        self.opens: dict[bytes, Open] = {}
        self._out: list[bytes | bytearray] = []
        self._events: list[FileOperation] = []
        self._op_ids = iter(range(1, 1 << 62))
        self._waiting: dict[int, _Waiting] = {}
        self._orphans: list[object] = []
        self._file_ids = iter(range(1, 1 << 62))

    @staticmethod
    def _default_session_ids() -> Callable[[], int]:
        counter = iter(range(1, 1 << 63))
        return lambda: (next(counter) << 16) | 0x0001

    # -- I/O boundary ------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes | bytearray]:
        """Whole PDUs to send, in order (the transport frames each)."""
        out, self._out = self._out, []
        return out

    def receive_pdu(self, pdu: bytes | bytearray | memoryview) -> None:
        """Process one PDU. A malformed PDU closes the connection with :class:`RemoteProtocolError`."""
        if self.state is ConnState.CLOSED:
            raise RemoteProtocolError("connection closed")
        view = memoryview(pdu)
        try:
            if bytes(view[:4]) == TRANSFORM_PROTOCOL_ID:
                plain, session = self._decrypt(view)
                self._process_chain(memoryview(plain), encrypted_for=session)
            elif bytes(view[:4]) == PROTOCOL_ID:
                self._process_chain(view, encrypted_for=None)
            else:
                raise RemoteProtocolError(f"unsupported protocol id {bytes(view[:4]).hex()}")
        except SMBProtocolError:
            self.state = ConnState.CLOSED
            raise

    # -- compounds, signing, encryption ---------------------------------------------------------

    def _decrypt(self, view: memoryview) -> tuple[bytes, Session]:
        if self.cipher is None:
            raise RemoteProtocolError(
                "encrypted message on a connection without a cipher", NTStatus.ACCESS_DENIED
            )
        try:
            transform = crypto.parse_transform_header(view)
            session = self.sessions.get(transform.session_id)
            if session is None or session.keys is None:
                raise RemoteProtocolError(
                    f"encrypted message for unknown session {transform.session_id:#x}",
                    NTStatus.USER_SESSION_DELETED,
                )
            plain = crypto.decrypt(view, session.keys.decryption_key(server=True), self.cipher)
        except crypto.SMBCryptoError as exc:
            raise RemoteProtocolError(str(exc), NTStatus.ACCESS_DENIED) from None
        return plain, session

    def _process_chain(self, view: memoryview, encrypted_for: Session | None) -> None:
        self._continue(_Chain(view, encrypted_for))

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
                self._events.append(outcome)
                return  # resumed by complete()
            if outcome is not None:
                chain.replies.append(self._as_requested(outcome, chain))
        if chain.replies:
            self._emit(chain.replies)

    @staticmethod
    def _as_requested(reply: _Reply, chain: _Chain) -> _Reply:
        """An encrypted request gets an encrypted response (MS-SMB2 3.3.4.1.4)."""
        if chain.encrypted_for is not None and reply.session is chain.encrypted_for:
            reply.encrypt, reply.sign = True, False
        return reply

    def _emit(self, replies: list[_Reply]) -> None:
        """Build the response chain: one compound PDU, each part 8-byte aligned and signed."""
        parts: list[bytearray] = []
        for i, r in enumerate(replies):
            flags = Flags.SERVER_TO_REDIR | (r.request.flags & Flags.RELATED_OPERATIONS if i else 0)
            header = Header(
                credit_charge=r.request.credit_charge,
                status=r.status,
                command=r.request.command,
                credits=r.credits,
                flags=flags | (Flags.SIGNED if r.sign else 0),
                message_id=r.request.message_id,
                reserved_or_async=Header.sync_field(r.tree_id),
                session_id=r.session_id,
            )
            msg = bytearray(header.to_bytes())
            msg += r.body
            parts.append(msg)
        for part in parts[:-1]:
            part.extend(bytes((-len(part)) % 8))
            part[20:24] = len(part).to_bytes(4, "little")  # NextCommand
        for r, msg in zip(replies, parts, strict=True):
            if r.raw_for_preauth and r.session is not None and r.session.preauth is not None:
                r.session.preauth.update(msg)
            if r.sign and r.session is not None and r.session.signer is not None:
                r.session.signer.sign_in_place(msg)
        pdu: bytes | bytearray = parts[0] if len(parts) == 1 else b"".join(parts)
        encrypt_for = next((r.session for r in replies if r.encrypt and r.session is not None), None)
        if encrypt_for is not None and encrypt_for.keys is not None and self.cipher is not None:
            nonce = crypto.random_nonce(self.cipher, self._randbytes)
            pdu = crypto.encrypt(
                pdu, encrypt_for.keys.encryption_key(server=True), self.cipher, encrypt_for.session_id, nonce
            )
        self._out.append(pdu)

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
            return None  # nothing is pending yet; CANCEL gets no response (3.3.5.16)
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
            return self._error(header, NTStatus.USER_SESSION_DELETED, credits, None)
        check = self._check_security(header, message, session, encrypted_for)
        if check is not None:
            return self._error(header, check, credits, session)
        if command is Command.LOGOFF:
            Empty4.parse(message, "LOGOFF request")
            reply = self._ok(header, EMPTY4, credits, session)
            self._drop_opens(lambda o: o.session is session)
            del self.sessions[session.session_id]
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
            request = _FILE_DECODERS[command](message)
            return self._file_operation(header, request, credits, session, tree, chain)
        if command is Command.TREE_DISCONNECT:
            Empty4.parse(message, "TREE_DISCONNECT request")
            self._drop_opens(lambda o: o.tree is tree)
            del session.trees[tree.tree_id]
            return self._ok(header, EMPTY4, credits, session, tree_id=tree.tree_id)
        return self._error(header, NTStatus.NOT_SUPPORTED, credits, session, tree_id=tree.tree_id)

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
            assert session.signer is not None
            if not session.signer.verify(message):
                log.warning("bad signature", extra={"session": hex(session.session_id)})
                return NTStatus.ACCESS_DENIED
        elif session.signing_required:
            log.info("unsigned request on a signed session", extra={"session": hex(session.session_id)})
            return NTStatus.ACCESS_DENIED
        return None

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
        sign = (
            session is not None
            and session.state is SessionState.VALID
            and session.signer is not None
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
        common = [d for d in SUPPORTED_DIALECTS if d in req.dialects]
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
        capabilities = Capabilities.LARGE_MTU | Capabilities.MULTI_CHANNEL
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
        elif req.capabilities & Capabilities.ENCRYPTION:
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
            max_transact_size=self.limits.max_transact,
            max_read_size=self.limits.max_read,
            max_write_size=self.limits.max_write,
            system_time=self._system_time(),
            server_start_time=self.identity.start_time,
            security_buffer=self._initial_token,
            contexts=tuple(contexts),
        )
        self.state = ConnState.NEGOTIATED
        reply = self._ok(header, response.encode(), credits, None)
        if dialect == Dialect.SMB_3_1_1:
            self.preauth.update(message)
            # The response is hashed as sent: build it now so the hash sees the exact bytes.
            self._emit([reply])
            self.preauth.update(self._out[-1])
            return None
        return reply

    # -- SESSION_SETUP (MS-SMB2 3.3.5.5) ---------------------------------------------------------

    def _session_setup(
        self, header: Header, message: memoryview, credits: int, encrypted_for: Session | None
    ) -> _Reply:
        req = SessionSetupRequest.decode(message)
        if req.binding:
            # Multichannel binding arrives with issue 4; refuse it the way Windows does without it.
            return self._error(header, NTStatus.REQUEST_NOT_ACCEPTED, credits, None)
        if header.session_id == 0:
            if len(self.sessions) >= self.limits.max_sessions:
                return self._error(header, NTStatus.INSUFFICIENT_RESOURCES, credits, None)
            session = Session(
                session_id=self._session_ids(),
                dialect=self.dialect,
                authenticator=self._auth_factory(),
                preauth=self.preauth.copy() if self.dialect == Dialect.SMB_3_1_1 else None,
            )
            self.sessions[session.session_id] = session
        else:
            found = self.sessions.get(header.session_id)
            if found is None:
                return self._error(header, NTStatus.USER_SESSION_DELETED, credits, None)
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
            reply = self._error(header, exc.status, credits, session if session.reauthenticating else None)
            reply.session_id = session.session_id
            self._drop_opens(lambda o: o.session is session)
            self.sessions.pop(session.session_id, None)
            return reply
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
            reply.raw_for_preauth = session.state is SessionState.IN_PROGRESS
            return reply
        assert result.session_key is not None
        if session.reauthenticating:
            session.reauthenticating = False
            session.user, session.domain = result.user, result.domain
            log.info(
                "session re-authenticated", extra={"user": session.user, "session": hex(session.session_id)}
            )
            body = SessionSetupResponse(0, result.out_token).encode()
            return self._reply(header, NTStatus.SUCCESS, body, credits, session, 0)
        session.user, session.domain = result.user, result.domain
        session.keys = crypto.derive_session_keys(
            result.session_key,
            self.dialect,
            session.preauth.value if session.preauth is not None else None,
            self.cipher if self.dialect == Dialect.SMB_3_1_1 else None,
        )
        session.signer = crypto.make_signer(self.signing_algorithm, session.keys.signing_key)
        session.signing_required = self.policy.require_signing or bool(
            self.client_security_mode & SecurityMode.SIGNING_REQUIRED
        )
        session.encrypt_data = self.policy.encrypt_all and self.cipher is not None
        session.state = SessionState.VALID
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
        )
        log.info("session established", extra={"user": session.user, "session": hex(session.session_id)})
        return reply

    # -- file operations: handed to the shell, answered through complete() ---------------------

    def events(self) -> list[FileOperation]:
        """File operations to carry out, in order (each then answered with :meth:`complete`)."""
        events, self._events = self._events, []
        return events

    def handles_to_close(self) -> list[object]:
        """Handles of opens the protocol closed (logoff, tree disconnect) for the shell to release."""
        handles, self._orphans = self._orphans, []
        return handles

    def _drop_opens(self, which: Callable[[Open], bool]) -> None:
        for file_id in [fid for fid, o in self.opens.items() if which(o)]:
            self._orphans.append(self.opens.pop(file_id).handle)

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
        if not isinstance(request, CreateRequest):
            file_id = request.file_id
            if related and file_id == NO_FILE_ID:
                file_id = chain.last_file_id
            opened = self.opens.get(file_id) if file_id is not None else None
            if opened is None or opened.session is not session or opened.tree is not tree:
                return self._error(header, NTStatus.FILE_CLOSED, credits, session, tree_id=tree.tree_id)
            handle = opened.handle
        elif len(self.opens) >= self.limits.max_opens:
            return self._error(
                header, NTStatus.INSUFFICIENT_RESOURCES, credits, session, tree_id=tree.tree_id
            )
        assert session.user is not None
        op = FileOperation(next(self._op_ids), command, request, tree.share, session.user, handle, file_id)
        self._waiting[op.op_id] = _Waiting(chain, op, header, credits, session, tree)
        return op

    def _check_io_size(self, header: Header, request: FileRequest) -> int | None:
        """READ/WRITE within the negotiated sizes and paid for in credits (MS-SMB2 3.3.5.2.5)."""
        if isinstance(request, ReadRequest):
            size, limit = request.length, self.limits.max_read
        elif isinstance(request, WriteRequest):
            size, limit = request.length or len(request.data), self.limits.max_write
        else:
            return None
        if size > limit:
            return NTStatus.INVALID_PARAMETER
        if max(header.credit_charge, 1) < (max(size, 1) - 1) // 65536 + 1:
            return NTStatus.INVALID_PARAMETER
        return None

    def complete(self, op_id: int, result: FileResult, create: tuple[int, FileTimes] | None = None) -> None:
        """The shell finished a :class:`FileOperation`; answer it and go on with its chain.

        For a successful CREATE, ``create`` is (CreateAction, times) and ``result.handle`` the
        opened file; the core assigns the FileId.
        """
        waiting = self._waiting.pop(op_id)
        chain, op = waiting.chain, waiting.op
        body = result.body
        status = result.status
        if op.command is Command.CREATE:
            if status == NTStatus.SUCCESS and create is not None and result.handle is not None:
                file_id = next(self._file_ids).to_bytes(8, "little") + next(self._file_ids).to_bytes(
                    8, "little"
                )
                self.opens[file_id] = Open(file_id, waiting.session, waiting.tree, result.handle)
                chain.last_file_id = file_id
                body = CreateResponse(create[0], create[1], file_id).encode()
            elif status == NTStatus.SUCCESS:
                raise ValueError("a successful CREATE needs the handle and (action, times)")
            else:
                chain.failed = status
        elif op.command is Command.CLOSE and status == NTStatus.SUCCESS and op.file_id is not None:
            self.opens.pop(op.file_id, None)
        partial = status == NTStatus.BUFFER_OVERFLOW and body  # data that did not all fit, still sent
        if status != NTStatus.SUCCESS and not partial:
            body = encode_error()
        reply = self._reply(
            waiting.header, status, body, waiting.credits, waiting.session, waiting.tree.tree_id
        )
        chain.replies.append(self._as_requested(reply, chain))
        try:
            self._continue(chain)
        except SMBProtocolError:
            self.state = ConnState.CLOSED
            raise

    # -- IOCTL (MS-SMB2 3.3.5.15) -----------------------------------------------------------------

    def _ioctl(
        self, header: Header, message: memoryview, credits: int, session: Session, tree: Tree, chain: _Chain
    ) -> _Reply | FileOperation:
        req = IoctlRequest.decode(message)
        if req.ctl_code == CtlCode.FSCTL_PIPE_TRANSCEIVE:
            if tree.share.share_type != ShareType.PIPE:
                return self._error(
                    header, NTStatus.INVALID_DEVICE_REQUEST, credits, session, tree_id=tree.tree_id
                )
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
        share = self.shares.get(name.lower())
        if share is None:
            return self._error(header, NTStatus.BAD_NETWORK_NAME, credits, session)
        if session.user is None or not share.allows(session.user):
            log.info("share refused to user", extra={"share": share.name, "user": session.user})
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
