"""What all connections of one SMB server share, and the events between the core and its shell.

:class:`ServerState` holds the server-wide tables of MS-SMB2 3.3.1.5: sessions (a session may
be bound to several connections, Multichannel, 3.3.5.5.2), opens (which survive the loss of
one channel of their session) and oplocks (granted, broken and acknowledged across
connections). :class:`Session`, :class:`Channel`, :class:`Tree` and :class:`Open` are its
entries; :class:`Share` is what a tree connects to.

The core hands file work to the shell as :class:`FileOperation` events (and
:class:`CancelOperation`), the shell answers each with a :class:`FileResult`, and every
answered request is told to the shell's metrics as a :class:`RequestRecord`. The protocol
itself is :mod:`smbcore.server`, which re-exports all of these.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from . import crypto
from .auth import AuthStep
from .fileops import (
    CloseRequest,
    CreateRequest,
    FlushRequest,
    LockRequest,
    QueryDirectoryRequest,
    QueryInfoRequest,
    ReadRequest,
    SetInfoRequest,
    WriteRequest,
)
from .header import Command, Header
from .ioctl import IoctlRequest
from .messages import ShareType
from .notify import ChangeNotifyRequest
from .oplocks import (
    EXCLUSIVE_LEVELS,
    OPLOCK_BREAK_TIMEOUT,
    OplockLevel,
    break_level,
    is_attribute_only,
    overwrites,
)

if TYPE_CHECKING:
    from .server import ServerConnection, _Reply

log = logging.getLogger(__name__)


class Authenticator(Protocol):
    """One SPNEGO exchange (:class:`smbcore.auth.ServerAuthenticator`); raises
    :class:`~smbcore.auth.AuthenticationError` with the status to answer on failure."""

    def step(self, token: bytes) -> AuthStep: ...


@dataclass(frozen=True, slots=True)
class Share:
    """A share as the core needs it: name, type, who may connect, encryption.

    ``users`` lists the accounts that may connect (``None``: every authenticated user).
    ``guest_ok`` also lets anonymous (null) and guest sessions connect; nobody else's logon
    becomes a guest one. Those sessions have no key, so a share cannot both allow them and
    require encryption.
    """

    name: str
    share_type: ShareType = ShareType.DISK
    encrypt: bool = False
    users: frozenset[str] | None = None
    hidden: bool = False
    path: str | None = None  # the folder a disk share serves
    guest_ok: bool = False

    def __post_init__(self) -> None:
        if self.guest_ok and self.encrypt:
            raise ValueError(f"share {self.name}: guest access and encryption exclude each other")

    def allows(self, user: str) -> bool:
        return self.users is None or user.lower() in {u.lower() for u in self.users}

    def admits(self, session: Session) -> bool:
        """May ``session`` connect (TREE_CONNECT, MS-SMB2 3.3.5.7)?"""
        if session.anonymous or session.guest:
            return self.guest_ok
        return session.user is not None and self.allows(session.user)


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


@dataclass(eq=False)
class Tree:
    tree_id: int
    share: Share


@dataclass(eq=False)
class Channel:
    """MS-SMB2 3.3.1.14: a connection bound to a session, and the key that signs on it."""

    connection: ServerConnection
    signer: crypto.Signer | None  # None on anonymous and guest sessions: they have no key


@dataclass(eq=False)
class Session:
    """MS-SMB2 3.3.1.8. ``signer`` signs with Session.SigningKey (the first channel's key,
    and the key binding requests are signed with); each channel has its own in ``channels``."""

    session_id: int
    dialect: int
    authenticator: Authenticator
    preauth: crypto.PreauthHash | None
    client_guid: bytes = b""
    cipher: crypto.CipherId | None = None
    signing_algorithm: crypto.SigningAlgorithm = crypto.SigningAlgorithm.AES_CMAC
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
    channels: dict[ServerConnection, Channel] = field(default_factory=dict)
    anonymous: bool = False  # Session.IsAnonymous: a null session
    guest: bool = False  # Session.IsGuest


@dataclass
class _Chain:
    """A received (possibly compound) PDU being answered; waits while a file operation runs."""

    view: memoryview
    encrypted_for: Session | None
    offset: int | None = 0
    replies: list[_Reply] = field(default_factory=list)
    last_file_id: bytes | None = None  # for related operations (MS-SMB2 3.3.5.2.7.2)
    failed: int | None = None  # status of a failed CREATE, given to the related operations after it
    received_at: float = 0.0  # ServerState.clock() when the PDU arrived


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
    | ChangeNotifyRequest
)


#: Who a null session's operations run for (the name Windows gives the anonymous SID, S-1-5-7).
ANONYMOUS_LOGON: Final = "ANONYMOUS LOGON"


@dataclass(frozen=True, slots=True)
class FileOperation:
    """An event: a file operation for the shell to carry out, then :meth:`ServerConnection.complete`.

    ``handle`` is what the shell returned when the file was opened (None for CREATE). For a
    CREATE, ``break_keys`` are the file keys (see :class:`FileResult`) whose oplocks must be
    broken before the file may be opened: if the target is one of them the shell opens
    nothing and answers STATUS_OPLOCK_BREAK_IN_PROGRESS with that ``file_key``; the core
    breaks the oplocks, waits for the holders, and asks again. When the open would meet a
    sharing conflict, only a target in ``batch_keys`` is broken first; for the others the
    conflict is answered at once. ``user`` is the session's account, :data:`ANONYMOUS_LOGON`
    for a null session.
    """

    op_id: int
    command: Command
    request: FileRequest
    share: Share
    user: str
    handle: object | None
    file_id: bytes | None
    break_keys: frozenset[Hashable] = frozenset()
    batch_keys: frozenset[Hashable] = frozenset()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What :attr:`ServerState.on_request` is told about each answered request (for metrics):
    the final answer only, not an interim STATUS_PENDING."""

    connection: ServerConnection
    command: Command
    status: int
    seconds: float  # from the PDU's arrival to its answer
    session_id: int
    share: str | None  # the tree's share, if the request had one
    response_bytes: int


@dataclass(frozen=True, slots=True)
class CancelOperation:
    """An event: the client cancelled a file operation the shell is still running
    (MS-SMB2 3.3.5.16). A shell that can stop it (a wait) answers it through
    :meth:`ServerConnection.complete` with STATUS_CANCELLED; otherwise it just finishes."""

    op_id: int


@dataclass(frozen=True, slots=True)
class FileResult:
    """How the shell answers a :class:`FileOperation`: a status and the response body
    (an ERROR body is used for failures); for CREATE the new handle and the opened file's
    identity (``file_key``: equal for every open of the same file, e.g. (st_dev, st_ino);
    None for objects that take no oplocks, such as pipes)."""

    status: int
    body: bytes | bytearray = b""
    handle: object | None = None
    file_key: Hashable | None = None


@dataclass(eq=False)
class _Waiting:
    """A file operation the shell is running (or the core holds back), and what its answer needs."""

    chain: _Chain
    op: FileOperation
    header: Header
    credits: int
    session: Session
    tree: Tree
    async_id: int = 0
    blocked_on: set[Open] = field(default_factory=set)  # oplock breaks a CREATE waits for
    signer: crypto.Signer | None = None  # the channel's, kept: the answer may come after a LOGOFF
    counted: Open | None = None  # the open whose outstanding requests count this one


@dataclass(eq=False)
class Open:
    """MS-SMB2 3.3.1.10: an open file; lives in the server's global open table so that every
    channel of its session reaches it."""

    file_id: bytes
    session: Session
    tree: Tree
    handle: object
    connection: ServerConnection  # where it was opened: break notifications go there first
    file_key: Hashable | None = None
    oplock: OplockLevel = OplockLevel.NONE
    breaking_to: OplockLevel | None = None
    break_deadline: float = 0.0
    channel_sequence: int = 0  # the newest ChannelSequence seen on it (MS-SMB2 3.3.5.2.10)
    outstanding_requests: int = 0  # modifying requests running with that ChannelSequence
    outstanding_pre_requests: int = 0  # and with older ones: a replay waits for them
    create_guid: bytes | None = None  # from a DH2Q context: a replayed CREATE finds this open
    create_response: bytes = b""  # what the CREATE answered, answered again to its replay


_DURABLE_V2_REQUEST = b"DH2Q"  # SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 (MS-SMB2 2.2.13.2.11)


def create_guid(request: CreateRequest) -> bytes | None:
    """The CreateGuid of a CREATE's DH2Q context: what identifies the open across a replay."""
    for context in request.contexts:
        if context.name == _DURABLE_V2_REQUEST and len(context.data) >= 32:
            guid = bytes(context.data[16:32])
            return guid if any(guid) else None
    return None


def _default_session_ids() -> Callable[[], int]:
    counter = itertools.count(1)
    return lambda: (next(counter) << 16) | 0x0001


class ServerState:
    """What all connections of one server share (MS-SMB2 3.3.1.5): the global session table,
    the global open table, oplocks, and the pending oplock-break timers.

    Input on one connection can produce work on another (a break notification sent to the
    holder's connection; a CREATE there resumed when the break is acknowledged): after every
    call into the core the shell asks :meth:`take_dirty` which connections have output or
    events, and :meth:`next_deadline` when to call :meth:`handle_timer`. ``clock`` gives the
    time (seconds, monotonic) for those timers; the core never reads a clock itself.
    """

    def __init__(
        self,
        *,
        session_ids: Callable[[], int] | None = None,
        clock: Callable[[], float] = lambda: 0.0,
        oplock_break_timeout: float = OPLOCK_BREAK_TIMEOUT,
        shares: dict[str, Share] | None = None,
    ) -> None:
        #: The shares, by lower-case name; changed at run time with add_share/remove_share.
        self.shares: dict[str, Share] = {name.lower(): share for name, share in (shares or {}).items()}
        self.sessions: dict[int, Session] = {}
        self.opens: dict[bytes, Open] = {}
        self.by_create_guid: dict[tuple[int, bytes], Open] = {}  # (session id, CreateGuid)
        self.clock = clock
        self.oplock_break_timeout = oplock_break_timeout
        self._session_ids = session_ids or _default_session_ids()
        self._file_ids = itertools.count(1)
        self._op_ids = itertools.count(1)
        self._by_key: dict[Hashable, list[Open]] = {}
        self._holders: set[Open] = set()  # opens holding an oplock
        self._breaking: set[Open] = set()
        self._break_waiters: dict[Open, list[tuple[ServerConnection, _Waiting]]] = {}
        self._dirty: dict[ServerConnection, None] = {}
        self._orphans: list[object] = []
        #: Called for every answered request (see RequestRecord); the shell's metrics hook.
        self.on_request: Callable[[RequestRecord], None] | None = None

    # -- for the shell ---------------------------------------------------------------------------

    def take_dirty(self) -> list[ServerConnection]:
        """Connections with PDUs to send or events to run since the last call."""
        dirty, self._dirty = list(self._dirty), {}
        return dirty

    def handles_to_close(self) -> list[object]:
        """Handles of opens the protocol dropped (logoff, tree disconnect, a session's last
        channel lost, an abandoned CREATE) for the shell to release."""
        handles, self._orphans = self._orphans, []
        return handles

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run (an oplock break's acknowledgment timeout)."""
        return min((o.break_deadline for o in self._breaking), default=None)

    def handle_timer(self, now: float) -> None:
        """Breaks not acknowledged in time leave the holder with no oplock (MS-SMB2 3.3.2.1)."""
        for holder in [o for o in self._breaking if o.break_deadline <= now]:
            log.info("oplock break not acknowledged in time", extra={"file_id": holder.file_id.hex()})
            self.acknowledge(holder, OplockLevel.NONE)

    # -- tables --------------------------------------------------------------------------------

    def new_session_id(self) -> int:
        return self._session_ids()

    def new_op_id(self) -> int:
        """Operation ids are server-wide: the file service, which they reach, is too."""
        return next(self._op_ids)

    def new_file_id(self) -> bytes:
        return next(self._file_ids).to_bytes(8, "little") + next(self._file_ids).to_bytes(8, "little")

    def mark(self, conn: ServerConnection) -> None:
        self._dirty[conn] = None

    def add_open(self, opened: Open, oplock: OplockLevel) -> None:
        self.opens[opened.file_id] = opened
        if opened.create_guid is not None:
            self.by_create_guid[(opened.session.session_id, opened.create_guid)] = opened
        if opened.file_key is not None:
            self._by_key.setdefault(opened.file_key, []).append(opened)
            self.set_oplock(opened, oplock)

    def set_oplock(self, opened: Open, level: OplockLevel) -> None:
        opened.oplock = level
        if level == OplockLevel.NONE:
            self._holders.discard(opened)
        else:
            self._holders.add(opened)

    def others_on(self, opened: Open) -> list[Open]:
        if opened.file_key is None:
            return []
        return [o for o in self._by_key.get(opened.file_key, ()) if o is not opened]

    def forget_open(self, opened: Open) -> None:
        """An open is gone (closed or dropped): out of the tables, its breaks resolved."""
        self.opens.pop(opened.file_id, None)
        if opened.create_guid is not None:
            self.by_create_guid.pop((opened.session.session_id, opened.create_guid), None)
        if opened.file_key is not None:
            same = self._by_key.get(opened.file_key)
            if same is not None:
                same[:] = [o for o in same if o is not opened]
                if not same:
                    del self._by_key[opened.file_key]
        self.set_oplock(opened, OplockLevel.NONE)
        if opened in self._breaking:
            self._break_done(opened)

    def drop_opens(self, which: Callable[[Open], bool]) -> None:
        for opened in [o for o in self.opens.values() if which(o)]:
            self.forget_open(opened)
            self._orphans.append(opened.handle)

    def orphan(self, handle: object) -> None:
        self._orphans.append(handle)

    def add_share(self, share: Share) -> None:
        """Serve another share (or replace one of the same name for new tree connects)."""
        self.shares[share.name.lower()] = share

    def remove_share(self, name: str) -> Share | None:
        """Stop serving a share: its tree connects end and their opens are closed; requests on
        them get STATUS_NETWORK_NAME_DELETED (MS-SMB2 3.3.5.2.11)."""
        share = self.shares.pop(name.lower(), None)
        if share is None:
            return None
        for session in self.sessions.values():
            for tree_id in [t for t, tree in session.trees.items() if tree.share is share]:
                tree = session.trees.pop(tree_id)
                self.drop_opens(lambda o, tree=tree: o.tree is tree)  # type: ignore[misc]
        return share

    def close_session(self, session_id: int) -> bool:
        """An operator closes a session (Close-SmbSession): it ends as at LOGOFF, and what its
        requests are still waiting for is cancelled. False if there is no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        for conn in list(session.channels):
            conn.cancel_session_requests(session)
        self.remove_session(session)
        return True

    def remove_session(self, session: Session) -> None:
        """LOGOFF, a failed re-authentication, PreviousSessionId, or the last channel gone:
        the session leaves every table and its opens are closed (MS-SMB2 3.3.5.6)."""
        self.sessions.pop(session.session_id, None)
        for conn in list(session.channels):
            conn.sessions.pop(session.session_id, None)
        session.channels.clear()
        self.drop_opens(lambda o: o.session is session)

    # -- oplocks -------------------------------------------------------------------------------

    def break_keys(self, request: CreateRequest) -> frozenset[Hashable]:
        """Files a CREATE may not open before their oplocks are broken (an open for attributes
        only breaks nothing, unless it replaces the data)."""
        overwrite = overwrites(request.disposition)
        if not self._holders or (is_attribute_only(request.desired_access) and not overwrite):
            return frozenset()
        return frozenset(
            o.file_key
            for o in self._holders
            if o.breaking_to is not None or o.oplock in EXCLUSIVE_LEVELS or overwrite
        )

    def batch_keys(self) -> frozenset[Hashable]:
        """Files with a Batch oplock (or one breaking from Batch): a sharing conflict on them
        breaks the oplock first, since its holder may just be keeping a closed file open
        (MS-FSA 2.1.5.1.2); other oplocks do not stop a SHARING_VIOLATION."""
        return frozenset(o.file_key for o in self._holders if o.oplock == OplockLevel.BATCH)

    def start_breaks(self, key: Hashable, overwrite: bool) -> list[Open]:
        """Break the oplocks on a file another open wants; the holders still to acknowledge."""
        waiting_on: list[Open] = []
        for holder in list(self._by_key.get(key, ())):
            if holder.breaking_to is not None:
                waiting_on.append(holder)
                continue
            target = break_level(holder.oplock, overwrite)
            if target == holder.oplock:
                continue
            sent = self._notify_break(holder, target)
            if holder.oplock in EXCLUSIVE_LEVELS and sent:
                holder.breaking_to = target
                holder.break_deadline = self.clock() + self.oplock_break_timeout
                self._breaking.add(holder)
                waiting_on.append(holder)
            else:  # Level II to none needs no acknowledgment (MS-SMB2 3.3.4.6)
                self.set_oplock(holder, target)
        return waiting_on

    def break_level_two(self, writer: Open) -> None:
        """A write, lock or size change: every Level II oplock on the file goes to none, the
        writer's own included (MS-FSA 2.1.5.17.3), with no acknowledgment expected."""
        for other in [writer, *self.others_on(writer)]:
            if other.oplock == OplockLevel.LEVEL_II and other.breaking_to is None:
                self._notify_break(other, OplockLevel.NONE)
                self.set_oplock(other, OplockLevel.NONE)

    def wait_for_breaks(self, conn: ServerConnection, waiting: _Waiting, holders: list[Open]) -> None:
        waiting.blocked_on = set(holders)
        for holder in holders:
            self._break_waiters.setdefault(holder, []).append((conn, waiting))

    def stop_waiting(self, waiting: _Waiting) -> None:
        for holder in waiting.blocked_on:
            waiters = self._break_waiters.get(holder, [])
            waiters[:] = [(c, w) for c, w in waiters if w is not waiting]
        waiting.blocked_on.clear()

    def acknowledge(self, holder: Open, level: OplockLevel) -> None:
        self.set_oplock(holder, level)
        self._break_done(holder)

    def _break_done(self, holder: Open) -> None:
        holder.breaking_to = None
        self._breaking.discard(holder)
        for conn, waiting in self._break_waiters.pop(holder, []):
            waiting.blocked_on.discard(holder)
            if not waiting.blocked_on:
                conn.resume_create(waiting)

    def _notify_break(self, holder: Open, level: OplockLevel) -> bool:
        """Send the break notification on the holder's connection, or another channel of its
        session; False when the session has no channel left to hear it."""
        conn = holder.connection
        if conn not in holder.session.channels:
            conn = next(iter(holder.session.channels), conn)
        if conn.state is ConnState.CLOSED or conn not in holder.session.channels:
            return False
        conn.send_oplock_break(holder, level)
        return True
