"""The asyncio client: :class:`SMBClient` is a thin shell around one
:class:`~smbcore.client.ClientConnection` over Direct TCP.

::

    async with await SMBClient.connect("host", 445) as client:
        session = await client.login("alice", "secret")
        tree = await session.connect_tree("data")
        async with await tree.open("dir/file.bin", "w") as f:
            await f.write(0, payload)           # split into WRITEs of up to 8 MiB, all in flight
        print(await tree.listdir("dir"))

The shell owns the socket and nothing else. Reads go straight into the core's buffers
(:class:`~smbcore.pdureader.PDUReader` and ``recv_into``); writes go out with ``sendmsg`` from
the buffers the core produced, so a WRITE's data is sent from the caller's memory, never
joined with its header (unless it must be encrypted). Every request has a waiter (a future)
that the core's events resolve: a response, a timeout (:class:`SMBTimeoutError`), or the end
of the connection, which fails every waiter with the same :class:`SMBConnectionError`.

READ and WRITE of more than one request's worth are split into requests of up to the
negotiated size, sent at once as far as the credits and the session's byte window
(:attr:`ClientConfig.window_bytes`) allow; :class:`ByteWindow` bounds the data in flight, so
memory stays bounded whatever the file size. Streaming helpers (:class:`FileWriter`,
:func:`copy_to_share`, :func:`copy_from_share`) live in :mod:`smbcore.transfer`.

A session may have several channels (Multichannel): :meth:`SMBSession.bind` binds another
connection to it, and every request of the session, its trees and files then goes to a
channel chosen in proportion to the channels' speeds. When a channel fails, its requests in
flight are sent again on the others with SMB2_FLAGS_REPLAY_OPERATION and the next
ChannelSequence (a CREATE carries a DH2Q CreateGuid so that its replay finds the open its
first try made); callers see only the final answers. :mod:`smbcore.aio_multichannel` plans
the channels, opens and binds them, and re-binds the ones that fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .auth import ClientAuthenticator
from .client import (
    MIN_IO,
    BindingFailed,
    ChannelBound,
    ClientConfig,
    ClientConnection,
    CloseResult,
    CompoundResponse,
    InterimResponse,
    IoctlResult,
    Negotiated,
    OutputBuffer,
    ReadResult,
    Request,
    RequestTimedOut,
    Response,
    Session,
    SessionEstablished,
    SessionFailed,
    TreeConnect,
    WriteResult,
)
from .client_errors import (
    ConnectionAborted,
    ConnectionClosed,
    ConnectionLost,
    SMBConnectionError,
    SMBStatusError,
    SMBTimeoutError,
    status_error,
)
from .errors import SMBProtocolError
from .fileinfo import (
    AccessMask,
    DispositionInformation,
    EndOfFileInformation,
    FileAttributes,
    FileInfoClass,
    FileNetworkOpenInformation,
    RenameInformation,
    decode_directory_entries,
    filetime_to_unix_ns,
)
from .fileops import (
    CLOSE_FLAG_POSTQUERY_ATTRIB,
    CloseRequest,
    CreateContext,
    CreateDisposition,
    CreateOptions,
    CreateRequest,
    CreateResponse,
    FileTimes,
    FlushRequest,
    InfoType,
    QueryDirectoryFlags,
    QueryDirectoryRequest,
    QueryInfoRequest,
    SetInfoRequest,
)
from .framing import frame_header
from .header import Command
from .ioctl import NO_FILE_ID, CtlCode, IoctlRequest, NetworkInterfaceInfo, decode_interfaces
from .messages import EMPTY4, ShareType
from .multichannel import (
    STATUS_FILE_NOT_AVAILABLE,
    ChannelKey,
    ChannelScheduler,
    ReplayBook,
    ReplayDecision,
    replay_decision,
    retry_delay,
)
from .ntstatus import NTStatus
from .pdureader import MAX_FRAME, PDUReader
from .wire import Buffer

if TYPE_CHECKING:
    from .transfer import FileWriter

__all__ = [
    "ByteWindow",
    "DirEntry",
    "FileInfo",
    "SMBClient",
    "SMBFile",
    "SMBSession",
    "SMBTree",
]

log = logging.getLogger(__name__)

#: iovecs per ``sendmsg`` call (Linux's IOV_MAX is 1024).
_MAX_IOVECS = 512
#: QUERY_DIRECTORY output per request: one credit's worth.
_DIRECTORY_OUTPUT = 64 * 1024
#: FSCTL_QUERY_NETWORK_INTERFACE_INFO output: 431 entries of 152 bytes.
_INTERFACES_OUTPUT = 64 * 1024
#: What servers answer an FSCTL they do not support (Samba with Multichannel off: the last two).
_FSCTL_UNSUPPORTED = frozenset({NTStatus.NOT_SUPPORTED, NTStatus.INVALID_DEVICE_REQUEST, 0xC000019C})
#: SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 (MS-SMB2 2.2.13.2.11): its CreateGuid makes a CREATE
#: replayable on another channel (the server answers a replay with the open the first try made).
_DH2Q = b"DH2Q"

FILE_READ = 0x00120089  # FILE_GENERIC_READ: data, attributes, EAs, READ_CONTROL, SYNCHRONIZE
FILE_WRITE = 0x00120116  # FILE_GENERIC_WRITE: data, append, attributes, EAs, READ_CONTROL, SYNCHRONIZE
SHARE_ALL = 0x00000007  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
_METADATA = AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE

#: ``open()`` modes: (DesiredAccess, CreateDisposition), like Python's own.
MODES: dict[str, tuple[int, CreateDisposition]] = {
    "r": (FILE_READ, CreateDisposition.OPEN),
    "r+": (FILE_READ | FILE_WRITE, CreateDisposition.OPEN),
    "w": (FILE_READ | FILE_WRITE, CreateDisposition.OVERWRITE_IF),
    "w+": (FILE_READ | FILE_WRITE, CreateDisposition.OVERWRITE_IF),
    "x": (FILE_READ | FILE_WRITE, CreateDisposition.CREATE),
    "a": (FILE_READ | FILE_WRITE, CreateDisposition.OPEN_IF),
}


def smb_path(path: str) -> str:
    """``a/b/c`` or ``\\a\\b`` as the share-relative name CREATE wants (``a\\b\\c``)."""
    return "\\".join(p for p in path.replace("/", "\\").split("\\") if p)


# -- flow control ------------------------------------------------------------------------------


class ByteWindow:
    """A FIFO semaphore counted in bytes: how much READ/WRITE data may be in flight.

    A request larger than the window takes the whole window (so it can still go, alone).
    Waiters are served in order, so a large request is not starved by small ones.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the window must be at least one byte")
        self.size = size
        self.free = size
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def try_acquire(self, n: int) -> int:
        """Reserve ``n`` bytes (at most the window) if that needs no waiting; the amount or 0."""
        n = min(n, self.size)
        if self._waiters or self.free < n:
            return 0
        self.free -= n
        return n

    async def acquire(self, n: int) -> int:
        """Reserve ``n`` bytes (at most the window), waiting for them; returns the amount."""
        n = min(n, self.size)
        got = self.try_acquire(n)
        if got:
            return got
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(n)  # granted as the waiter was cancelled: hand it on
            else:
                self._waiters.remove((n, future))
                self._wake()
            raise
        return n

    def release(self, n: int) -> None:
        self.free += n
        if self.free > self.size:
            raise ValueError("released more than was acquired")
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            n, future = self._waiters.popleft()
            if not future.done():
                self.free -= n
                future.set_result(None)


# -- what the API returns ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file's metadata says: sizes in bytes, times as FILETIME (100 ns since 1601)."""

    size: int
    allocation_size: int
    attributes: int
    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & FileAttributes.DIRECTORY)

    @property
    def mtime(self) -> float:
        """The last write time in seconds since the Unix epoch."""
        return filetime_to_unix_ns(self.last_write_time) / 1e9

    @classmethod
    def from_times(cls, t: FileTimes) -> FileInfo:
        return cls(
            t.end_of_file, t.allocation_size, t.file_attributes, t.creation_time, t.last_access_time,
            t.last_write_time, t.change_time,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    info: FileInfo


# -- the connection ----------------------------------------------------------------------------


class SMBClient:
    """One SMB connection (one channel) and its sessions; ``async with`` closes it.

    Make one with :meth:`connect`. Every request made through it, from any task, shares the
    connection's credits and byte window.
    """

    def __init__(self, sock: socket.socket, conn: ClientConnection, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self.conn = conn
        self.host, self.port = host, port
        #: The connection's two ends: (address, port) of this side and of the server.
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.remote: tuple[str, int] = sock.getpeername()[:2]
        self.config = conn.config
        self.window = ByteWindow(self.config.window_bytes)
        self._waiters: dict[Request, asyncio.Future[Response]] = {}
        self._sessions: dict[Session, asyncio.Future[Session]] = {}
        self._bindings: dict[Session, asyncio.Future[None]] = {}
        self._lost_callbacks: list[Callable[[SMBClient, SMBConnectionError], None]] = []
        self._negotiated: asyncio.Future[Negotiated] = self._loop.create_future()
        self._negotiate_request: Request | None = None
        self._sendq: collections.deque[memoryview] = collections.deque()
        self._write_armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._error: SMBConnectionError | None = None
        self._reader: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = 445,
        *,
        config: ClientConfig | None = None,
        server_name: str | None = None,
        client_guid: bytes | None = None,
        source_address: str | None = None,
    ) -> SMBClient:
        """Open a TCP connection and NEGOTIATE; raises :class:`ConnectionLost` if the server
        cannot be reached, :class:`SMBTimeoutError` if it does not answer in time.

        ``source_address`` binds the socket to that local address before it connects (a
        Multichannel channel leaves through the interface it was planned on). A connection
        meant to become another channel of a session uses the session's ``client_guid``."""
        config = config or ClientConfig()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.connect_timeout
        try:
            async with asyncio.timeout_at(deadline):
                sock = await _open_socket(host, port, source_address, config.dead_peer_timeout)
        except TimeoutError:
            raise SMBTimeoutError(
                f"no TCP connection to {host}:{port} in {config.connect_timeout} s"
            ) from None
        except OSError as exc:
            via = f" from {source_address}" if source_address else ""
            raise ConnectionLost(f"cannot connect to {host}:{port}{via}: {exc.strerror or exc}") from exc
        conn = ClientConnection(config, client_guid=client_guid, server_name=server_name or host)
        client = cls(sock, conn, host, port)
        client._reader = loop.create_task(client._read_loop(), name=f"smb-read-{host}:{port}")
        client._negotiate_request = conn.start_negotiate(loop.time(), timeout=deadline - loop.time())
        client._pump()
        try:
            await client._negotiated
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        """Close the connection; requests still in flight fail with :class:`ConnectionClosed`."""
        self._fail(ConnectionClosed("the client was closed"))
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> SMBConnectionError | None:
        """Why the connection ended (None while it is open)."""
        return self._error

    @property
    def key(self) -> ChannelKey:
        """The connection's (local address, server address) pair."""
        return ChannelKey(self.local[0], self.remote[0])

    def on_lost(self, callback: Callable[[SMBClient, SMBConnectionError], None]) -> None:
        """Call ``callback(client, error)`` once when the connection ends (closed by the
        application too), after every waiter has been failed. At once if it already has."""
        if self._error is not None:
            callback(self, self._error)
        else:
            self._lost_callbacks.append(callback)

    @property
    def dialect(self) -> int:
        return self.conn.dialect

    @property
    def max_read(self) -> int:
        """Bytes per READ request: the negotiated size within the window."""
        return min(self.conn.max_read, self.window.size)

    @property
    def max_write(self) -> int:
        return min(self.conn.max_write, self.window.size)

    # -- sessions --------------------------------------------------------------------------------

    async def login(
        self, user: str, password: str, domain: str = "", *, require_encryption: bool = False
    ) -> SMBSession:
        """Authenticate (NTLMv2 in SPNEGO) and return the session.

        Raises :class:`~smbcore.client_errors.LogonFailure` for refused credentials and
        :class:`~smbcore.client_errors.SecurityRequirementError` when encryption is required
        but the server cannot encrypt. Requests of the session are signed, or encrypted when
        the server or ``require_encryption`` asks for it.
        """
        self._check_open()
        auth = ClientAuthenticator(user, password, domain, server_name=self.conn.server_name)
        session = self.conn.start_session(
            auth, self._loop.time(), require_encryption=require_encryption, user=user, domain=domain
        )
        future = self._loop.create_future()
        self._sessions[session] = future
        self._pump()
        return SMBSession(self, await future, password=password)

    async def bind(self, session: Session, password: str) -> None:
        """Bind this connection to ``session`` (established on another connection to the same
        server) as one more channel; see :meth:`SMBSession.bind`."""
        self._check_open()
        auth = ClientAuthenticator(session.user, password, session.domain, server_name=self.conn.server_name)
        future: asyncio.Future[None] = self._loop.create_future()
        self._bindings[session] = future
        try:
            self.conn.bind_session(session, auth, self._loop.time())
        except BaseException:
            self._bindings.pop(session, None)
            raise
        self._pump()
        await future

    # -- requests --------------------------------------------------------------------------------

    def start(self, make: Callable[[float], Request]) -> asyncio.Future[Response]:
        """Queue one request made by ``make(now)``; its future resolves to the final response."""
        (future,) = self.start_many(lambda now: (make(now),))
        return future

    def start_many(self, make: Callable[[float], Sequence[Request]]) -> list[asyncio.Future[Response]]:
        self._check_open()
        requests = make(self._loop.time())
        futures = []
        for request in requests:
            future: asyncio.Future[Response] = self._loop.create_future()
            self._waiters[request] = future
            futures.append(future)
        self._pump()
        return futures

    async def call(self, make: Callable[[float], Request]) -> Response:
        return await self.start(make)

    async def echo(self) -> None:
        """ECHO: a round trip that proves the connection is alive."""
        response = await self.call(lambda now: self.conn.request(Command.ECHO, EMPTY4, session=None, now=now))
        _check(response, "ECHO")

    # -- the shell: socket, events, timers --------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise _copy(self._error)

    def _pump(self) -> None:
        """Hand the core's events to their waiters, send its output, arm its timer."""
        conn = self.conn
        for event in conn.events():
            if isinstance(event, CompoundResponse):
                for part in event.parts:
                    if isinstance(part, Response):
                        self._resolve(part)
            elif isinstance(event, Response):
                self._resolve(event)
            elif isinstance(event, InterimResponse):
                log.debug("interim response", extra={"command": event.request.command.name})
            elif isinstance(event, RequestTimedOut):
                self._timed_out(event.request)
            elif isinstance(event, Negotiated):
                if not self._negotiated.done():
                    self._negotiated.set_result(event)
            elif isinstance(event, SessionEstablished):
                self._settle_session(event.session, None)
            elif isinstance(event, SessionFailed):
                self._settle_session(
                    event.session, status_error(event.status, "SESSION_SETUP", event.session.user)
                )
            elif isinstance(event, ChannelBound | BindingFailed):
                bound = self._bindings.pop(event.session, None)
                if bound is not None and not bound.done():
                    if isinstance(event, ChannelBound):
                        bound.set_result(None)
                    else:
                        bound.set_exception(status_error(event.status, "SESSION_SETUP (binding)"))
        self._queue_output()
        self._arm_timer()

    def _resolve(self, response: Response) -> None:
        future = self._waiters.pop(response.request, None)
        if future is not None and not future.done():
            future.set_result(response)

    def _timed_out(self, request: Request) -> None:
        if request is self._negotiate_request and not self._negotiated.done():
            self._negotiated.set_exception(
                SMBTimeoutError(f"no NEGOTIATE response from {self.host}:{self.port} in time")
            )
            return
        future = self._waiters.pop(request, None)
        if future is not None and not future.done():
            future.set_exception(SMBTimeoutError(f"{request.command.name} got no response in time"))

    def _settle_session(self, session: Session, error: Exception | None) -> None:
        future = self._sessions.pop(session, None)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(session)
        else:
            future.set_exception(error)

    def _queue_output(self) -> None:
        out = self.conn.data_to_send()
        if not out:
            return
        queue = self._sendq
        for pieces in out:
            views = [memoryview(p).cast("B") for p in pieces]
            queue.append(memoryview(frame_header(sum(len(v) for v in views))))
            queue.extend(views)
        if not self._write_armed:
            self._send_some()

    def _send_some(self) -> None:
        """Write as much of the queue as the socket takes now; wait for writability for the rest."""
        queue, sock = self._sendq, self._sock
        try:
            while queue:
                sent = sock.sendmsg(list(itertools.islice(queue, _MAX_IOVECS)))
                while sent:
                    first = queue[0]
                    if sent >= len(first):
                        sent -= len(first)
                        queue.popleft()
                    else:
                        queue[0] = first[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError):
            if not self._write_armed:
                self._loop.add_writer(self._fd, self._send_some)
                self._write_armed = True
            return
        except OSError as exc:
            self._fail(ConnectionLost(f"sending to {self.host}:{self.port} failed: {exc.strerror or exc}"))
            return
        if self._write_armed:
            self._loop.remove_writer(self._fd)
            self._write_armed = False

    def _arm_timer(self) -> None:
        when = self.conn.get_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self._error is not None:
            return
        try:
            self.conn.handle_timer(self._loop.time())
        except SMBProtocolError as exc:
            self._fail(_aborted(exc))
            return
        self._pump()

    async def _read_loop(self) -> None:
        loop, sock, conn = self._loop, self._sock, self.conn
        reader = PDUReader(min(self.config.max_pdu + 1024, MAX_FRAME))
        try:
            while True:
                n = await loop.sock_recv_into(sock, reader.get_buffer())
                if n == 0:
                    raise ConnectionLost(f"{self.host}:{self.port} closed the connection")
                reader.buffer_updated(n)
                while (pdu := reader.next_pdu()) is not None:
                    conn.receive_pdu(pdu, loop.time())
                    self._pump()
        except asyncio.CancelledError:
            raise
        except SMBConnectionError as exc:
            self._fail(exc)
        except SMBProtocolError as exc:
            self._pump()  # what the core produced before the error still counts
            self._fail(_aborted(exc))
        except OSError as exc:
            self._fail(
                ConnectionLost(f"receiving from {self.host}:{self.port} failed: {exc.strerror or exc}")
            )
        except Exception as exc:  # a bug: the connection cannot be trusted any more
            log.exception("closing the SMB connection after an internal error")
            self._fail(ConnectionAborted(f"internal error: {exc!r}"))

    def _fail(self, error: SMBConnectionError) -> None:
        """The connection is over: fail every waiter with (a copy of) ``error``, close the socket."""
        if self._error is not None:
            return
        self._error = error
        if error.__cause__ is None:
            log.info("SMB connection ended", extra={"peer": f"{self.host}:{self.port}", "reason": str(error)})
        self.conn.close()  # what it drops is what self._waiters holds
        self.conn.events()  # nothing more will be delivered
        waiters: list[asyncio.Future[Any]] = [
            *self._waiters.values(),
            *self._sessions.values(),
            *self._bindings.values(),
            self._negotiated,
        ]
        self._waiters.clear()
        self._sessions.clear()
        self._bindings.clear()
        for future in waiters:
            if not future.done():
                future.set_exception(_copy(error))
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            try:
                callback(self, error)
            except Exception:  # a bug in the callback must not leave the socket open
                log.exception("a connection-lost callback failed")
        if self._timer is not None:
            self._timer.cancel()
        if self._write_armed:
            self._loop.remove_writer(self._fd)
            self._write_armed = False
        self._sendq.clear()
        reader = self._reader
        if reader is not None and not reader.done() and reader is not asyncio.current_task():
            # Close the socket once the reader has left recv_into (and the loop has forgotten the
            # fd), so that no other socket can be given the same fd number in between.
            reader.cancel()
            reader.add_done_callback(lambda _: self._sock.close())
        else:
            self._sock.close()


async def _open_socket(
    host: str, port: int, source_address: str | None = None, dead_peer_timeout: float | None = None
) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{host} has no address")
    if source_address is not None:
        family = socket.AF_INET6 if ":" in source_address else socket.AF_INET
        infos = [info for info in infos if info[0] == family]
        error = OSError(f"{host} has no address of the family of {source_address}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            if source_address is not None:
                sock.bind((source_address, 0))
            if dead_peer_timeout is not None:
                _detect_dead_peer(sock, dead_peer_timeout)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


def _detect_dead_peer(sock: socket.socket, timeout: float) -> None:
    """Make the kernel end the connection when the peer stops answering for about ``timeout``
    seconds: data unacknowledged that long (TCP_USER_TIMEOUT), or an idle connection whose
    keepalive probes go unanswered. A pulled link or a dead server then fails the channel (and
    its requests are replayed elsewhere) instead of leaving it hanging for the kernel's
    default of many minutes."""
    idle = max(1, int(timeout / 2))
    interval = max(1, int(timeout / 6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", int(timeout * 1000)),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _releaser(window: ByteWindow, reserved: int) -> Callable[[asyncio.Future[Response]], None]:
    """A done-callback giving ``reserved`` bytes back to ``window``."""
    return lambda _: window.release(reserved)


def _copy(error: SMBConnectionError) -> SMBConnectionError:
    """A fresh exception per waiter (tracebacks are per raise), keeping the cause."""
    copy = type(error)(error.message, error.status)
    copy.__cause__ = error.__cause__
    return copy


def _aborted(exc: SMBProtocolError) -> ConnectionAborted:
    error = ConnectionAborted(f"the server broke the protocol: {exc}", exc.status)
    error.__cause__ = exc
    return error


def _check(response: Response, command: str, path: str | None = None) -> Response:
    """The response if it succeeded, else its status as an exception."""
    if response.status != NTStatus.SUCCESS:
        raise status_error(response.status, command, path)
    return response


# -- sessions and trees --------------------------------------------------------------------------


#: Builds an operation's request(s) on a channel: ``build(conn, now, replay)``.
Build = Callable[[ClientConnection, float, bool], Sequence[Request]]


class _Operation:
    """One operation of a session (a request, or a compound) across its tries: the first, the
    replays after channel failures, the retries after STATUS_FILE_NOT_AVAILABLE."""

    __slots__ = ("attempt", "build", "channel", "data", "futures", "replayable", "replays", "retries", "size")

    def __init__(
        self, build: Build, size: int, replayable: bool, futures: list[asyncio.Future[Response]], data: bool
    ):
        self.build = build
        self.size = size
        self.data = data  # a READ or WRITE: its size counts in bytes_sent
        self.replayable = replayable
        self.futures = futures  # the caller's, one per request; resolved by the last try only
        self.attempt = 0
        self.channel: SMBClient | None = None
        self.replays = 0
        self.retries = 0


class SMBSession:
    """An authenticated session: the connection it was established on and, bound to it later
    (:meth:`bind`), more connections to the same server: its channels (Multichannel).

    Every request of the session, its trees and its files goes through :meth:`submit`, which
    picks a channel in proportion to the channels' speeds (:class:`ChannelScheduler`). When a
    channel fails, the session bumps its ChannelSequence and sends what was in flight on it
    again on the surviving channels, flagged as replays (MS-SMB2 3.2.7.1); the caller sees
    only the final answer. With one channel, a failure fails everything in flight, as before.
    """

    #: How often one operation may be replayed after channel failures, and retried after
    #: STATUS_FILE_NOT_AVAILABLE (a replay the server saw too early).
    max_replays = 8
    max_retries = 30

    def __init__(
        self,
        client: SMBClient,
        session: Session,
        *,
        password: str | None = None,
        window: ByteWindow | None = None,
    ) -> None:
        self.session = session
        self._loop = client._loop
        self._first = client
        self._password = password
        #: READ/WRITE data in flight across all channels; the first connection's own window
        #: unless the caller gives one (a Multichannel session's, sized for all its channels).
        self.window = window or client.window
        self._scheduler: ChannelScheduler[SMBClient] = ChannelScheduler()
        self._book: ReplayBook[SMBClient, _Operation] = ReplayBook()
        self._lost_handlers: list[Callable[[SMBClient, SMBConnectionError], None]] = []
        self._last_error: SMBConnectionError | None = None
        self._closing = False
        self._bytes: dict[SMBClient, int] = {}
        self._idle_waiters: dict[SMBClient, list[asyncio.Future[None]]] = {}
        #: Counters: channels that failed, operations replayed, STATUS_FILE_NOT_AVAILABLE retries.
        self.channel_failures = 0
        self.replayed = 0
        self.retried = 0
        self._attach(client, None)

    @property
    def client(self) -> SMBClient:
        """The first channel still in use (the connection the session was established on, while
        it lives)."""
        channels = self._scheduler.channels
        return channels[0] if channels else self._first

    @property
    def channels(self) -> tuple[SMBClient, ...]:
        """The channels in use, in the order they were bound."""
        return self._scheduler.channels

    @property
    def scheduler(self) -> ChannelScheduler[SMBClient]:
        return self._scheduler

    @property
    def session_id(self) -> int:
        return self.session.session_id

    @property
    def encrypted(self) -> bool:
        """Every request of the session is encrypted (the server or the caller asked)."""
        return self.session.encrypted

    @property
    def user(self) -> str:
        return self.session.user

    @property
    def max_read(self) -> int:
        """Bytes per READ request: what every channel negotiated, within the window, and small
        enough that each channel can have two in flight."""
        return self._io_size(min((c.conn.max_read for c in self.channels), default=self._first.max_read))

    @property
    def max_write(self) -> int:
        return self._io_size(min((c.conn.max_write for c in self.channels), default=self._first.max_write))

    def _io_size(self, negotiated: int) -> int:
        n = len(self._scheduler)
        share = self.window.size if n <= 1 else max(MIN_IO, self.window.size // (2 * n) // MIN_IO * MIN_IO)
        return min(negotiated, share)

    def on_channel_lost(self, handler: Callable[[SMBClient, SMBConnectionError], None]) -> None:
        """Call ``handler(client, error)`` when a channel ends, after its requests have been
        replayed (or failed)."""
        self._lost_handlers.append(handler)

    # -- channels ------------------------------------------------------------------------------

    async def bind(self, client: SMBClient, *, speed: int | None = None) -> None:
        """Bind ``client`` (a connection to the same server, made with this session's ClientGuid)
        to the session as one more channel, and use it in proportion to ``speed`` (bit/s; None
        when unknown). Raises :class:`~smbcore.client_errors.SMBStatusError` if the server
        refuses, :class:`~smbcore.errors.LocalProtocolError` if the connection negotiated
        something else than the session's first channel."""
        if self._password is None:
            raise RuntimeError("this session has no credentials to bind a channel with")
        await client.bind(self.session, self._password)
        tree = next(iter(self.session.trees.values()), None)
        if tree is not None:  # 3.0 / 3.0.2: validate this connection's NEGOTIATE too
            validate = client.conn.validate_negotiate(tree, self._loop.time())
            if validate is not None:
                await client.start(lambda now: validate)
        self._attach(client, speed)

    def set_speed(self, client: SMBClient, speed: int | None) -> None:
        if client in self._scheduler:
            self._scheduler.add(client, speed)

    def retire(self, client: SMBClient) -> None:
        """Send nothing more on ``client``; what it has in flight still completes there."""
        self._scheduler.remove(client)

    def bytes_sent(self, client: SMBClient) -> int:
        """READ and WRITE bytes the session asked for over ``client`` (replays included); kept
        after the channel ends."""
        return self._bytes.get(client, 0)

    def inflight(self, client: SMBClient) -> int:
        """Operations in flight on ``client``."""
        return len(self._book.inflight(client))

    async def wait_idle(self, client: SMBClient) -> None:
        """Wait until ``client`` has no operation in flight (or has ended)."""
        while self._book.inflight(client) and not client.closed:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._idle_waiters.setdefault(client, []).append(waiter)
            await waiter

    def _wake_idle(self, client: SMBClient) -> None:
        if client in self._idle_waiters and not self._book.inflight(client):
            for waiter in self._idle_waiters.pop(client):
                if not waiter.done():
                    waiter.set_result(None)

    def _attach(self, client: SMBClient, speed: int | None) -> None:
        self._scheduler.add(client, speed)
        client.on_lost(self._channel_lost)

    def _channel_lost(self, client: SMBClient, error: SMBConnectionError) -> None:
        """A channel ended: bump ChannelSequence, replay what it had in flight (MS-SMB2 3.2.7.1)."""
        self._scheduler.remove(client)
        self._last_error = error
        ops = self._book.channel_failed(client)
        self._wake_idle(client)
        if not isinstance(error, ConnectionClosed):
            self.channel_failures += 1
        if (ops or not isinstance(error, ConnectionClosed)) and len(self._scheduler):
            self.session.bump_channel_sequence()
            log.info(
                "channel %s lost (%s): %d request(s) in flight to replay on %d channel(s)",
                client.key, error, len(ops), len(self._scheduler),
            )  # fmt: skip
        for op in ops:
            decision = replay_decision(
                replayable=op.replayable and not self._closing, replays=op.replays,
                channels_left=len(self._scheduler), max_replays=self.max_replays,
            )  # fmt: skip
            if decision is ReplayDecision.REPLAY:
                op.replays += 1
                self.replayed += 1
                self._send(op, replay=True)
            # else: the failed try's futures report the connection's error (_settle)
        for handler in list(self._lost_handlers):
            handler(client, error)

    async def close(self) -> None:
        """Close every channel; what is in flight fails with ConnectionClosed (nothing is
        replayed)."""
        self._closing = True
        clients = dict.fromkeys([*self.channels, self._first])
        await asyncio.gather(*(c.close() for c in clients))

    # -- requests ------------------------------------------------------------------------------

    def submit(
        self, build: Build, *, size: int = 0, count: int = 1, replayable: bool = True, data: bool = False
    ) -> list[asyncio.Future[Response]]:
        """Send the ``count`` requests ``build(conn, now, replay)`` makes on a channel of the
        session; one future per request, resolved with its final response. ``size`` (the bytes
        the operation moves) weighs in the choice of channel. A ``replayable`` operation whose
        channel fails is built again, with ``replay`` true, on another channel."""
        futures: list[asyncio.Future[Response]] = [self._loop.create_future() for _ in range(count)]
        self._send(_Operation(build, size, replayable, futures, data), replay=False)
        return futures

    def start(
        self,
        command: Command,
        body: Buffer,
        *,
        tree: TreeConnect | None = None,
        payload: Buffer = b"",
        send_size: int = 0,
        recv_size: int = 0,
        replayable: bool = True,
    ) -> asyncio.Future[Response]:
        """One request of the session (see :meth:`submit`)."""
        session = self.session

        def build(conn: ClientConnection, now: float, replay: bool) -> tuple[Request]:
            return (
                conn.request(
                    command, body, session=session, tree=tree, payload=payload, send_size=send_size,
                    recv_size=recv_size, now=now, replay=replay,
                ),
            )  # fmt: skip

        (future,) = self.submit(build, size=send_size + recv_size, replayable=replayable)
        return future

    async def call(self, command: Command, body: Buffer, **kw: Any) -> Response:
        return await self.start(command, body, **kw)

    def _send(self, op: _Operation, *, replay: bool) -> None:
        while True:
            try:
                channel = self._scheduler.pick(op.size)
            except LookupError:
                error = self._last_error or ConnectionLost("the session has no channel left")
                self._fail(op, _copy(error))
                return
            op.attempt += 1
            conn = channel.conn
            try:
                inner = channel.start_many(
                    lambda now, conn=conn, replay=replay: op.build(conn, now, replay)  # type: ignore[misc]
                )
            except SMBConnectionError as exc:  # it ended under us: try another
                self._scheduler.remove(channel)
                self._last_error = exc
                continue
            except BaseException as exc:
                self._fail(op, exc)
                return
            lost = channel.error
            if lost is None:
                break
            # Sending found the connection gone: it failed these requests (and _channel_lost
            # has run); send them again elsewhere, like any request in flight on it.
            for future in inner:
                future.cancelled() or future.exception()
            if not op.replayable or self._closing or op.replays >= self.max_replays:
                self._fail(op, _copy(lost))
                return
            op.replays += 1
            self.replayed += 1
            replay = True
        op.channel = channel
        if op.data:
            self._bytes[channel] = self._bytes.get(channel, 0) + op.size
        self._scheduler.started(channel, op.size)
        self._book.sent(channel, op)
        attempt = op.attempt
        pending = len(inner)

        def one_done(future: asyncio.Future[Response]) -> None:
            nonlocal pending
            if not future.cancelled():
                future.exception()  # retrieved here: a replayed try's error is nobody's
            pending -= 1
            if pending == 0:
                self._settle(op, attempt, inner)

        for future in inner:
            future.add_done_callback(one_done)

    def _settle(self, op: _Operation, attempt: int, inner: list[asyncio.Future[Response]]) -> None:
        if attempt != op.attempt:
            return  # this try's channel failed and the operation was replayed
        assert op.channel is not None
        self._scheduler.finished(op.channel, op.size)
        self._book.done(op)
        if self._idle_waiters:
            self._wake_idle(op.channel)
        results: list[Response | BaseException] = []
        for future in inner:
            if future.cancelled():
                results.append(asyncio.CancelledError())
            else:
                exc = future.exception()
                results.append(exc if exc is not None else future.result())
        if self._should_retry(op, results):
            op.retries += 1
            self.retried += 1
            self._loop.call_later(retry_delay(op.retries), functools.partial(self._send, op, replay=True))
            return
        for future, result in zip(op.futures, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _should_retry(self, op: _Operation, results: list[Response | BaseException]) -> bool:
        """STATUS_FILE_NOT_AVAILABLE for a replay, or for a request of an older
        ChannelSequence than the session's: the server is still working on requests sent
        before a channel failed (MS-SMB2 3.3.5.2.10); try again shortly, as a replay."""
        if self._closing or op.retries >= self.max_retries or not op.replayable:
            return False
        for result in results:
            if isinstance(result, Response) and result.status == STATUS_FILE_NOT_AVAILABLE:
                request = result.request
                return request.replay or request.channel_sequence != self.session.channel_sequence
        return False

    @staticmethod
    def _fail(op: _Operation, error: BaseException) -> None:
        for future in op.futures:
            if not future.done():
                future.set_exception(error)

    # -- session-wide requests -----------------------------------------------------------------

    async def connect_tree(self, share: str, *, require_encryption: bool = False) -> SMBTree:
        """TREE_CONNECT; raises :class:`~smbcore.client_errors.BadNetworkName` for an unknown share.

        On a 3.0 / 3.0.2 connection the first tree connect also validates the negotiation
        (FSCTL_VALIDATE_NEGOTIATE_INFO); a mismatch ends the connection.
        """
        client, conn = self.client, self.client.conn
        response = await client.call(
            lambda now: conn.tree_connect(self.session, share, now, require_encryption=require_encryption)
        )
        tree = _check(response, "TREE_CONNECT", share).expect(TreeConnect)
        validate = conn.validate_negotiate(tree, client._loop.time())
        if validate is not None:
            await client.start(lambda now: validate)
        return SMBTree(self, tree)

    async def logoff(self) -> None:
        """LOGOFF: the session and its trees and opens end."""
        response = await self.call(Command.LOGOFF, EMPTY4, replayable=False)
        _check(response, "LOGOFF")


@dataclass(frozen=True, slots=True)
class _Op:
    """One request of a compound: command, body, payload sizes for the credit charge."""

    command: Command
    body: bytes
    send_size: int = 0
    recv_size: int = 0


class SMBTree:
    """A connected share. Paths are relative to the share, with ``/`` or ``\\``."""

    def __init__(self, session: SMBSession, tree: TreeConnect) -> None:
        self.session = session
        self.tree = tree

    @property
    def client(self) -> SMBClient:
        return self.session.client

    @property
    def encrypted(self) -> bool:
        return self.session.encrypted or self.tree.encrypt_data or self.tree.require_encryption

    async def open(
        self,
        path: str,
        mode: str = "r",
        *,
        access: int | None = None,
        disposition: int | None = None,
        options: int = CreateOptions.NON_DIRECTORY_FILE,
        share_access: int = SHARE_ALL,
        attributes: int = 0,
    ) -> SMBFile:
        """Open (or create) a file: ``mode`` as Python's (``r``, ``r+``, ``w``, ``w+``, ``x``,
        ``a``; binary always), or explicit ``access`` / ``disposition`` / ``options``."""
        try:
            mode_access, mode_disposition = MODES[mode.replace("b", "")]
        except KeyError:
            raise ValueError(f"unknown mode {mode!r}") from None
        name = smb_path(path)
        request = CreateRequest(
            mode_access if access is None else access, attributes, share_access,
            mode_disposition if disposition is None else disposition, options, name, self._replayable(name),
        )  # fmt: skip
        response = await self.session.call(Command.CREATE, request.encode(), tree=self.tree)
        created = _check(response, "CREATE", path).expect(CreateResponse)
        return SMBFile(self, path, created)

    def _replayable(self, name: str) -> tuple[CreateContext, ...]:
        """A DH2Q context with a fresh CreateGuid (MS-SMB2 2.2.13.2.11): a CREATE replayed on
        another channel gets the open its first try made. Timeout 0 (the server's default), not
        persistent; no oplock or lease is asked for, so no server makes the open durable.
        (None for the share's root: fileops cannot encode contexts after an empty name.)"""
        if self.tree.share_type != ShareType.DISK or not name:
            return ()
        return (CreateContext(_DH2Q, bytes(16) + os.urandom(16)),)

    async def _compound(
        self, ops: Sequence[_Op], path: str, *, done_if_replayed: frozenset[int] = frozenset()
    ) -> list[Response]:
        """Related requests in one compound; raises the first failure (CREATE's, or a later one's).

        A replayed compound (its channel failed) whose first failure is in ``done_if_replayed``
        found what its first try did, and succeeds: a delete finding no file, a mkdir the
        directory."""
        session = self.session.session
        parts = [(op.command, op.body, op.send_size, op.recv_size) for op in ops]
        tree = self.tree
        futures = self.session.submit(
            lambda conn, now, replay: conn.compound(
                parts, session=session, tree=tree, now=now, replay=replay
            ),
            count=len(parts),
        )
        responses = await asyncio.gather(*futures)
        for op, response in zip(ops, responses, strict=True):
            if response.status in done_if_replayed and response.request.replay:
                break
            _check(response, op.command.name, path)
        return responses

    def _create(self, path: str, access: int, disposition: int, options: int) -> _Op:
        request = CreateRequest(
            access, 0, SHARE_ALL, disposition, options, smb_path(path), self._replayable(smb_path(path))
        )
        return _Op(Command.CREATE, request.encode())

    @staticmethod
    def _close(flags: int = 0) -> _Op:
        return _Op(Command.CLOSE, CloseRequest(24, flags, 0, NO_FILE_ID).to_bytes())

    @staticmethod
    def _set_info(info_class: int, buffer: bytes) -> _Op:
        body = SetInfoRequest(InfoType.FILE, info_class, NO_FILE_ID, buffer).encode()
        return _Op(Command.SET_INFO, body, send_size=len(buffer))

    async def stat(self, path: str) -> FileInfo:
        """The metadata of ``path`` (a file or a directory)."""
        create = self._create(path, _METADATA, CreateDisposition.OPEN, 0)
        responses = await self._compound([create, self._close(CLOSE_FLAG_POSTQUERY_ATTRIB)], path)
        closed = responses[1].expect(CloseResult).times
        times = closed if closed is not None else responses[0].expect(CreateResponse).times
        return FileInfo.from_times(times)

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def mkdir(self, path: str) -> None:
        create = self._create(path, _METADATA, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)
        await self._compound(
            [create, self._close()], path, done_if_replayed=frozenset({NTStatus.OBJECT_NAME_COLLISION})
        )

    async def _delete(self, path: str, options: int) -> None:
        """Open with DELETE access, set the delete disposition, close (MS-FSA: checked at the SET_INFO)."""
        create = self._create(path, AccessMask.DELETE | _METADATA, CreateDisposition.OPEN, options)
        disposition = self._set_info(FileInfoClass.DISPOSITION, DispositionInformation(True).encode())
        await self._compound(
            [create, disposition, self._close()], path,
            done_if_replayed=frozenset({NTStatus.OBJECT_NAME_NOT_FOUND}),
        )  # fmt: skip

    async def remove(self, path: str) -> None:
        """Delete a file (not a directory)."""
        await self._delete(path, CreateOptions.NON_DIRECTORY_FILE)

    async def rmdir(self, path: str) -> None:
        """Delete an empty directory."""
        await self._delete(path, CreateOptions.DIRECTORY_FILE)

    async def rename(self, source: str, target: str, *, replace: bool = False) -> None:
        """Rename or move ``source`` (a file or a directory) to ``target`` in the same share."""
        create = self._create(source, AccessMask.DELETE | _METADATA, CreateDisposition.OPEN, 0)
        info = self._set_info(FileInfoClass.RENAME, RenameInformation(replace, smb_path(target)).encode())
        await self._compound([create, info, self._close()], source)

    async def scandir(self, path: str = "", pattern: str = "*") -> list[DirEntry]:
        """The entries of a directory (without ``.`` and ``..``), with their metadata."""
        directory = await self.open(
            path, access=AccessMask.FILE_READ_DATA | _METADATA, disposition=CreateDisposition.OPEN,
            options=CreateOptions.DIRECTORY_FILE,
        )  # fmt: skip
        entries: list[DirEntry] = []
        info_class = FileInfoClass.FULL_DIRECTORY
        tree, file_id = self.tree, directory.file_id
        try:
            flags: int = QueryDirectoryFlags.RESTART_SCANS

            def build(conn: ClientConnection, now: float, replay: bool) -> tuple[Request]:
                # An enumeration moves on with each answer: a replay (whose first try may have
                # moved it) starts it again from the beginning.
                restart = QueryDirectoryFlags.RESTART_SCANS if replay else 0
                body = QueryDirectoryRequest(
                    info_class, flags | restart, file_id, pattern, _DIRECTORY_OUTPUT
                ).encode()
                size = _DIRECTORY_OUTPUT
                return (
                    conn.request(
                        Command.QUERY_DIRECTORY, body, session=tree.session, tree=tree, recv_size=size,
                        now=now, replay=replay,
                    ),
                )  # fmt: skip

            while True:
                (future,) = self.session.submit(build, size=_DIRECTORY_OUTPUT)
                response = await future
                if response.request.replay:
                    entries.clear()
                if response.status in (NTStatus.NO_MORE_FILES, NTStatus.NO_SUCH_FILE):
                    break
                output = _check(response, "QUERY_DIRECTORY", path).expect(OutputBuffer).data
                if not output:
                    break
                for entry in decode_directory_entries(info_class, output):
                    if entry.name not in (".", ".."):
                        info = FileInfo(
                            entry.end_of_file, entry.allocation_size, entry.attributes, entry.creation_time,
                            entry.last_access_time, entry.last_write_time, entry.change_time,
                        )  # fmt: skip
                        entries.append(DirEntry(entry.name, info))
                flags = 0
        finally:
            await directory.close()
        return entries

    async def listdir(self, path: str = "", pattern: str = "*") -> list[str]:
        """The names in a directory, without ``.`` and ``..``."""
        return [entry.name for entry in await self.scandir(path, pattern)]

    async def disconnect(self) -> None:
        response = await self.session.call(Command.TREE_DISCONNECT, EMPTY4, tree=self.tree, replayable=False)
        _check(response, "TREE_DISCONNECT", self.tree.share)

    async def query_network_interfaces(self) -> list[NetworkInterfaceInfo] | None:
        """The server's network interfaces (FSCTL_QUERY_NETWORK_INTERFACE_INFO, MS-SMB2
        3.2.4.20.10): one entry per address; None when the server does not do Multichannel."""
        body = IoctlRequest(
            CtlCode.FSCTL_QUERY_NETWORK_INTERFACE_INFO, NO_FILE_ID, b"", _INTERFACES_OUTPUT
        ).encode()
        response = await self.session.call(Command.IOCTL, body, tree=self.tree, recv_size=_INTERFACES_OUTPUT)
        if response.status in _FSCTL_UNSUPPORTED:
            return None
        output = _check(response, "IOCTL", "FSCTL_QUERY_NETWORK_INTERFACE_INFO").expect(IoctlResult).output
        return decode_interfaces(output) if output else []


# -- files -----------------------------------------------------------------------------------------


class SMBFile:
    """An open file. Reads and writes take explicit offsets; many may be in flight at once."""

    def __init__(self, tree: SMBTree, path: str, created: CreateResponse) -> None:
        self.tree = tree
        self.session = tree.session
        self.path = path
        self.file_id = created.file_id
        self.create_action = created.create_action
        self.info = FileInfo.from_times(created.times)
        self.closed = False

    @property
    def client(self) -> SMBClient:
        return self.session.client

    @property
    def size(self) -> int:
        """The size CREATE reported (see :meth:`stat` for the current one)."""
        return self.info.size

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.closed and self.session.channels:
            await self.close()

    def _start(
        self, command: Command, body: bytes, *, send_size: int = 0, recv_size: int = 0
    ) -> asyncio.Future[Response]:
        tree = self.tree.tree
        return self.session.start(command, body, tree=tree, send_size=send_size, recv_size=recv_size)

    async def _call(
        self, command: Command, body: bytes, *, send_size: int = 0, recv_size: int = 0
    ) -> Response:
        return await self._start(command, body, send_size=send_size, recv_size=recv_size)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        response = await self._call(Command.CLOSE, CloseRequest(24, 0, 0, self.file_id).to_bytes())
        if response.status == NTStatus.FILE_CLOSED and response.request.replay:
            return  # the first try closed it; its response was lost with its channel
        _check(response, "CLOSE", self.path)

    async def flush(self) -> None:
        """FLUSH: the server writes what it holds of this file to stable storage."""
        response = await self._call(Command.FLUSH, FlushRequest(24, 0, 0, self.file_id).to_bytes())
        _check(response, "FLUSH", self.path)

    async def query_info(self, info_class: int, output_length: int, info_type: int = InfoType.FILE) -> bytes:
        body = QueryInfoRequest(info_type, info_class, output_length, self.file_id).encode()
        response = await self._call(Command.QUERY_INFO, body, recv_size=output_length)
        return _check(response, "QUERY_INFO", self.path).expect(OutputBuffer).data

    async def set_info(self, info_class: int, buffer: bytes, info_type: int = InfoType.FILE) -> None:
        body = SetInfoRequest(info_type, info_class, self.file_id, buffer).encode()
        response = await self._call(Command.SET_INFO, body, send_size=len(buffer))
        _check(response, "SET_INFO", self.path)

    async def stat(self) -> FileInfo:
        data = await self.query_info(FileInfoClass.NETWORK_OPEN, FileNetworkOpenInformation.SIZE)
        t = FileNetworkOpenInformation.decode(data)
        self.info = FileInfo(
            t.end_of_file, t.allocation_size, t.file_attributes, t.creation_time, t.last_access_time,
            t.last_write_time, t.change_time,
        )  # fmt: skip
        return self.info

    async def truncate(self, size: int) -> None:
        """Set the end of file (shorter cuts, longer extends with zeros)."""
        await self.set_info(FileInfoClass.END_OF_FILE, EndOfFileInformation(size).encode())

    # -- data: one request --------------------------------------------------------------------------

    async def start_read(self, offset: int, length: int) -> tuple[asyncio.Future[Response], int]:
        """Reserve window space, then send one READ of up to :attr:`SMBSession.max_read` bytes;
        the caller releases the window (the second value) once done with the data."""
        length = min(length, self.session.max_read)
        reserved = await self.session.window.acquire(length)
        return self._send_read(offset, length, reserved), reserved

    def _send_read(self, offset: int, length: int, reserved: int) -> asyncio.Future[Response]:
        tree, file_id = self.tree.tree, self.file_id
        try:
            (future,) = self.session.submit(
                lambda conn, now, replay: (conn.read(tree, file_id, offset, length, now, replay=replay),),
                size=length,
                data=True,
            )
        except BaseException:
            self.session.window.release(reserved)
            raise
        return future

    async def start_write(self, offset: int, data: Buffer) -> asyncio.Future[Response]:
        """Reserve window space, then send one WRITE of ``data`` (at most
        :attr:`SMBSession.max_write` bytes); the window is released when the response comes.
        ``data`` must not change until then (a replay sends it again)."""
        reserved = await self.session.window.acquire(len(memoryview(data)))
        return self._send_write(offset, data, reserved)

    def try_start_write(self, offset: int, data: Buffer) -> asyncio.Future[Response] | None:
        """:meth:`start_write` if the window has room now, else None."""
        reserved = self.session.window.try_acquire(len(memoryview(data)))
        return self._send_write(offset, data, reserved) if reserved else None

    def _send_write(self, offset: int, data: Buffer, reserved: int) -> asyncio.Future[Response]:
        window, tree, file_id = self.session.window, self.tree.tree, self.file_id
        size = len(memoryview(data))
        try:
            (future,) = self.session.submit(
                lambda conn, now, replay: (conn.write(tree, file_id, offset, data, now, replay=replay),),
                size=size,
                data=True,
            )
        except BaseException:
            window.release(reserved)
            raise
        future.add_done_callback(_releaser(window, reserved))
        return future

    def written(self, response: Response, expected: int) -> int:
        """The byte count of a WRITE response, or its failure as an exception."""
        count = _check(response, "WRITE", self.path).expect(WriteResult).count
        if count != expected:
            raise SMBStatusError(NTStatus.UNSUCCESSFUL, f"WRITE wrote {count} of {expected} bytes", self.path)
        return count

    def data_of(self, response: Response) -> memoryview | None:
        """The data of a READ response; None at the end of the file."""
        if response.status == NTStatus.END_OF_FILE:
            return None
        return _check(response, "READ", self.path).expect(ReadResult).data

    # -- data: many requests -------------------------------------------------------------------------

    async def write(self, offset: int, data: Buffer) -> int:
        """Write ``data`` at ``offset``: requests of up to :attr:`SMBSession.max_write` bytes,
        as many in flight as the window allows. Returns the bytes written."""
        view = memoryview(data).cast("B")
        chunk = self.session.max_write
        futures: list[tuple[asyncio.Future[Response], int]] = []
        try:
            for pos in range(0, len(view), chunk):
                piece = view[pos : pos + chunk]
                futures.append((await self.start_write(offset + pos, piece), len(piece)))
        finally:
            await asyncio.gather(*(f for f, _ in futures), return_exceptions=True)
        return sum(self.written(f.result(), n) for f, n in futures)

    async def chunks(
        self, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[tuple[int, memoryview]]:
        """``(offset, data)`` in file order, read ahead as far as the window allows; stops at the
        end of the file. A chunk's window space is released when the loop asks for the next."""
        session = self.session
        end = offset + length if length is not None else None
        pending: collections.deque[tuple[int, asyncio.Future[Response], int]] = collections.deque()
        position = offset
        eof = False
        try:
            while True:
                while not eof and (end is None or position < end):
                    want = session.max_read if end is None else min(session.max_read, end - position)
                    if pending:
                        reserved = session.window.try_acquire(want)
                        if not reserved:
                            break
                        future = self._send_read(position, want, reserved)
                    else:
                        future, reserved = await self.start_read(position, want)
                    pending.append((position, future, reserved))
                    position += want
                    if end is None and len(pending) * session.max_read >= session.window.size:
                        break
                if not pending:
                    return
                at, future, reserved = pending.popleft()
                try:
                    data = self.data_of(await future)
                    if data is not None and len(data):
                        yield at, data
                    if data is None or len(data) < reserved:
                        eof = True
                        if end is None:
                            end = at + (len(data) if data is not None else 0)
                finally:
                    session.window.release(reserved)
                if eof:
                    break
        finally:
            for _, future, reserved in pending:
                future.add_done_callback(_releaser(session.window, reserved))

    async def readinto(self, offset: int, buffer: Buffer) -> int:
        """Fill ``buffer`` from ``offset``; returns the bytes read (fewer at the end of the file)."""
        view = memoryview(buffer).cast("B")
        got = 0
        async for at, data in self.chunks(offset, len(view)):
            view[at - offset : at - offset + len(data)] = data
            got = at - offset + len(data)
        return got

    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end of the file)."""
        parts = [data async for _, data in self.chunks(offset, length)]
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def writer(
        self,
        offset: int = 0,
        *,
        buffer_size: int | None = None,
        buffers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> FileWriter:
        """A streaming writer from ``offset`` (see :class:`smbcore.transfer.FileWriter`)."""
        from .transfer import FileWriter

        return FileWriter(self, offset, buffer_size=buffer_size, buffers=buffers, progress=progress)
