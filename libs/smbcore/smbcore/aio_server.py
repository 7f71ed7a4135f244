"""The asyncio shell around :class:`~smbcore.server.ServerConnection`: Direct TCP.

One :class:`asyncio.BufferedProtocol` per connection: the transport receives straight into
the :class:`~smbcore.pdureader.PDUReader`'s buffers (a large WRITE lands in a buffer of its
own, once, taken from a server-wide :class:`~smbcore.buffers.BufferPool`). PDUs out are
framed and sent with ``sendmsg`` from the buffers the core produced (:class:`_Sender`: a
READ's data is never joined to its header nor copied into a transport buffer), and reading
pauses while more than two PDUs' worth waits to be sent, so a client that does not read its
responses cannot make the server buffer without bound. A protocol error closes only that
connection; the listener and the other connections carry on. Idle connections are closed after
``handshake_timeout`` (before a session is established) or ``idle_timeout``.

All connections share one :class:`~smbcore.server.ServerState` (sessions bound to several
connections, opens, oplocks): after anything reaches the core, :meth:`SMBServer.pump` sends
what every affected connection has to send, starts their file operations, releases dropped
handles and arms the oplock-break timer. A file operation still running after
``interim_response_delay`` gets an interim STATUS_PENDING response.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .buffers import BufferPool
from .config import ServerLimits
from .errors import SMBProtocolError
from .fileops import FileTimes
from .framing import frame_header
from .ioctl import NetworkInterfaceInfo
from .ntstatus import NTStatus
from .pdureader import PDUReader
from .server import (
    Authenticator,
    CancelOperation,
    FileOperation,
    FileResult,
    Pieces,
    RequestRecord,
    ServerConnection,
    ServerIdentity,
    ServerPolicy,
    ServerState,
    SessionState,
    Share,
)

log = logging.getLogger(__name__)

#: iovecs per ``sendmsg`` call (Linux's IOV_MAX is 1024).
_MAX_IOVECS = 512

#: Seconds between 1601-01-01 and 1970-01-01, for FILETIME.
_EPOCH_DELTA = 11_644_473_600


def filetime_now() -> int:
    return int((time.time() + _EPOCH_DELTA) * 10_000_000)


class FileService(Protocol):
    """Carries out file operations for the server (see :mod:`smbcore.fileservice`)."""

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]: ...

    def release(self, handle: object) -> None: ...


@runtime_checkable
class CancellableFileService(FileService, Protocol):
    """A file service whose operations can wait (blocking locks): ``cancel`` makes a waiting
    operation answer STATUS_CANCELLED soon; one that is not waiting just finishes."""

    def cancel(self, op_id: int) -> None: ...


class NoFiles:
    """A server without file shares (IPC$ only, or before a backend is configured)."""

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        return FileResult(NTStatus.NOT_SUPPORTED), None

    def release(self, handle: object) -> None:
        pass


@dataclass
class ServerSettings:
    """What an :class:`SMBServer` serves and how."""

    shares: dict[str, Share]
    authenticator_factory: Callable[[], Authenticator]
    initial_token: bytes
    limits: ServerLimits = field(default_factory=ServerLimits)
    policy: ServerPolicy = field(default_factory=ServerPolicy)
    identity: ServerIdentity = field(default_factory=lambda: ServerIdentity(os.urandom(16), filetime_now()))
    #: What FSCTL_QUERY_NETWORK_INTERFACE_INFO answers (asked at each query, so it can follow the host).
    interfaces: Callable[[], list[NetworkInterfaceInfo]] = list
    files: FileService = field(default_factory=NoFiles)
    #: Told about every answered request (command, status, latency, share, bytes): for metrics.
    on_request: Callable[[RequestRecord], None] | None = None
    #: Told when a connection ends, with its final byte counters (``protocol.conn``).
    on_connection_closed: Callable[[SMBConnection], None] | None = None


class _Sender:
    """A connection's outgoing PDUs: queued as ``memoryview``s of the buffers the core produced
    and written with ``sendmsg``, so no byte is copied in user space (Python 3.11's transport
    copies whatever the socket does not take at once into a buffer of its own, and joins what
    ``writelines`` gets). It writes on a duplicate of the transport's socket, the one way to
    be told when the socket is writable that the loop allows (``add_writer`` on the
    transport's own fd is refused); the transport still reads, and closes the connection.

    ``pause`` is called once more than ``high_water`` bytes wait, ``resume`` once no more
    than ``low_water`` do (the shell stops and restarts reading); ``failed`` when a send fails.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        high_water: int,
        low_water: int,
        pause: Callable[[], None],
        resume: Callable[[], None],
        failed: Callable[[OSError], None],
    ) -> None:
        self._sock: socket.socket = transport.get_extra_info("socket").dup()
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._high, self._low = high_water, low_water
        self._pause, self._resume, self._failed = pause, resume, failed
        self._paused = False
        self._armed = False  # waiting for the socket to be writable
        self._then: Callable[[], None] | None = None  # to call once everything is sent

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent."""
        return self._queued

    def send(self, pdus: list[Pieces]) -> None:
        """Frame each PDU (a list of pieces) and send what the socket takes; queue the rest."""
        queue = self._queue
        for pieces in pdus:
            views = [v for v in (memoryview(p).cast("B") for p in pieces) if v.nbytes]
            size = sum(v.nbytes for v in views)
            queue.append(memoryview(frame_header(size)))
            queue.extend(views)
            self._queued += 4 + size
        if not self._armed:
            self._send_some()
        if self._queued > self._high and not self._paused:
            self._paused = True
            self._pause()

    def when_sent(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the queue is empty (now if it is)."""
        if self._queue:
            self._then = then
        else:
            then()

    def _send_some(self) -> None:
        queue = self._queue
        try:
            while queue:
                batch = list(itertools.islice(queue, _MAX_IOVECS))
                sent = self._sock.sendmsg(batch)
                self._queued -= sent
                short = sent < sum(v.nbytes for v in batch)  # the socket's buffer is full
                while sent:
                    first = queue[0]
                    if sent >= first.nbytes:
                        sent -= first.nbytes
                        queue.popleft()
                    else:
                        queue[0] = first[sent:]
                        sent = 0
                if short:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self.close()
            self._failed(exc)
            return
        if queue:
            if not self._armed:
                self._loop.add_writer(self._sock.fileno(), self._send_some)
                self._armed = True
        else:
            if self._armed:
                self._loop.remove_writer(self._sock.fileno())
                self._armed = False
            if self._then is not None:
                then, self._then = self._then, None
                then()
        if self._paused and self._queued <= self._low:
            self._paused = False
            self._resume()

    def close(self) -> None:
        """Drop what is queued and let go of the socket (the transport still has its own)."""
        if self._armed:
            self._loop.remove_writer(self._sock.fileno())
            self._armed = False
        self._queue.clear()
        self._queued = 0
        self._then = None
        self._sock.close()


class SMBConnection(asyncio.BufferedProtocol):
    """One client connection (Direct TCP): its core (``conn``), both ends' addresses, ``close()``."""

    def __init__(self, server: SMBServer) -> None:
        self._server = server
        self._settings = server.settings
        self._reader = PDUReader(self._settings.limits.max_pdu, buffers=server.buffers)
        self._transport: asyncio.Transport | None = None
        self._sender: _Sender | None = None
        self._closing = False  # closing once what is queued has been sent
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = "?"
        self.local = "?"
        #: (host, port) of each end; None until connected.
        self.peer_address: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self.conn = ServerConnection(
            identity=self._settings.identity,
            shares=self._settings.shares,
            authenticator_factory=self._settings.authenticator_factory,
            initial_token=self._settings.initial_token,
            limits=self._settings.limits,
            policy=self._settings.policy,
            system_time=filetime_now,
            interfaces=self._settings.interfaces,
            server=server.state,
        )
        self._running: dict[int, FileOperation] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Reading stops while more than two PDUs of the largest size wait to be sent (the
        # pipeline a client with two READs in flight keeps full), and restarts at one.
        max_pdu = self._settings.limits.max_pdu
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.local = f"{local[0]}:{local[1]}" if local else "?"
        self.peer_address = (peer[0], peer[1]) if peer else None
        self.local_address = (local[0], local[1]) if local else None
        try:
            self._sender = _Sender(
                transport,
                high_water=2 * max_pdu,
                low_water=max_pdu,
                pause=transport.pause_reading,
                resume=self._resume_reading,
                failed=self._send_failed,
            )
        except OSError as exc:  # no fd left for the duplicate: refuse this connection only
            log.warning("refusing a connection", extra={"peer": self.peer, "error": str(exc)})
            transport.abort()
            return
        self._server.attach(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sender is not None:
            self._sender.close()
        # Running operations finish (their results are dropped by the core, handles released);
        # waiting ones are told to stop.
        files = self._settings.files
        if isinstance(files, CancellableFileService):
            for op_id in list(self._running):
                files.cancel(op_id)
        self.conn.connection_lost()
        self._server.detach(self)
        self._server.pump()
        if self._settings.on_connection_closed is not None:
            self._settings.on_connection_closed(self)

    def close(self) -> None:
        """End this connection (an operator's or the server's decision)."""
        if self._transport is not None:
            self._transport.close()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        established = any(s.state is SessionState.VALID for s in self.conn.sessions.values())
        limits = self._settings.limits
        timeout = limits.idle_timeout if established else limits.handshake_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, self._idle)

    def _idle(self) -> None:
        log.info("closing idle connection", extra={"peer": self.peer})
        if self._transport is not None:
            self._transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def _resume_reading(self) -> None:
        if self._transport is not None and not self._closing and not self._transport.is_closing():
            self._transport.resume_reading()

    def _send_failed(self, exc: OSError) -> None:
        log.info("closing connection after a failed send", extra={"peer": self.peer, "error": str(exc)})
        if self._transport is not None:
            self._transport.abort()

    def buffer_updated(self, nbytes: int) -> None:
        transport = self._transport
        assert transport is not None
        try:
            self._reader.buffer_updated(nbytes)
            while (pdu := self._reader.next_pdu()) is not None:
                self.conn.receive_pdu(pdu)
                self._server.pump()
        except SMBProtocolError as exc:
            self._fail(exc)
            return
        except Exception:  # a bug: close this connection only, and say where
            log.exception("closing connection after an internal error", extra={"peer": self.peer})
            transport.close()
            return
        self._arm_timer()

    def flush(self) -> None:
        """Send what the core produced for this connection and start what it asked for."""
        self._send_output()
        files = self._settings.files
        loop = asyncio.get_running_loop()
        for event in self.conn.events():
            if isinstance(event, CancelOperation):
                if isinstance(files, CancellableFileService) and event.op_id in self._running:
                    # After the operation's first step: a CANCEL that came in the same read as
                    # its request (smbtorture's notify tests send both at once) would otherwise
                    # reach the service before the operation started to wait, and be lost.
                    loop.call_soon(self._cancel, files, event.op_id)
                continue
            self._running[event.op_id] = event
            task = loop.create_task(self._run(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _cancel(self, files: CancellableFileService, op_id: int) -> None:
        if op_id in self._running:
            files.cancel(op_id)

    def _interim(self, op_id: int) -> None:
        if self.conn.go_async(op_id):
            self._server.pump()

    async def _run(self, op: FileOperation) -> None:
        delay = self._settings.limits.interim_response_delay
        interim = asyncio.get_running_loop().call_later(delay, self._interim, op.op_id)
        try:
            result, create = await self._settings.files.run(op)
        except Exception:  # a bug in the file service: answer, keep the connection
            log.exception("file operation failed", extra={"peer": self.peer, "command": op.command.name})
            result, create = FileResult(NTStatus.UNSUCCESSFUL), None
        finally:
            interim.cancel()
            self._running.pop(op.op_id, None)
        try:
            self.conn.complete(op.op_id, result, create)
        except SMBProtocolError as exc:
            self._fail(exc)
        self._server.pump()

    def _fail(self, exc: SMBProtocolError) -> None:
        transport = self._transport
        assert transport is not None
        log.warning("closing connection after a protocol error", extra={"peer": self.peer, "error": str(exc)})
        self._send_output()  # e.g. the error answer to the request that broke the rules
        self._closing = True
        transport.pause_reading()
        if self._sender is None:
            transport.close()
        else:
            self._sender.when_sent(transport.close)

    def _send_output(self) -> None:
        """Send the PDUs the core produced, each as the pieces it is made of."""
        out = self.conn.data_to_send()
        transport = self._transport
        if not out or transport is None or transport.is_closing() or self._sender is None:
            return
        self._sender.send(out)


class SMBServer:
    """A listening SMB server; ``async with`` or :meth:`start` / :meth:`close`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.connections: set[SMBConnection] = set()
        self._by_core: dict[ServerConnection, SMBConnection] = {}
        self._servers: list[asyncio.Server] = []
        self._break_timer: asyncio.TimerHandle | None = None
        self.state = ServerState(clock=self._now, shares=settings.shares)
        self.state.on_request = settings.on_request
        #: Buffers for received PDUs too large for the readers' staging (WRITEs), server-wide.
        self.buffers = BufferPool()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def attach(self, protocol: SMBConnection) -> None:
        self.connections.add(protocol)
        self._by_core[protocol.conn] = protocol

    def detach(self, protocol: SMBConnection) -> None:
        self.connections.discard(protocol)
        self._by_core.pop(protocol.conn, None)

    def pump(self) -> None:
        """After the core ran: flush every connection it touched, release dropped handles,
        and arm the timer for the next oplock-break timeout."""
        for conn in self.state.take_dirty():
            protocol = self._by_core.get(conn)
            if protocol is not None:
                protocol.flush()
            else:
                conn.data_to_send()
                conn.events()
        for handle in self.state.handles_to_close():
            self.settings.files.release(handle)
        if self._break_timer is not None:
            self._break_timer.cancel()
            self._break_timer = None
        deadline = self.state.next_deadline()
        if deadline is not None:
            self._break_timer = asyncio.get_running_loop().call_at(deadline, self._on_break_timer)

    def _on_break_timer(self) -> None:
        self._break_timer = None
        self.state.handle_timer(self._now())
        self.pump()

    def close_session(self, session_id: int) -> bool:
        """Close a session on every channel (Close-SmbSession); its connections that carry no
        other session are closed too. False if there is no such session."""
        session = self.state.sessions.get(session_id)
        if session is None:
            return False
        connections = [self._by_core[c] for c in session.channels if c in self._by_core]
        self.state.close_session(session_id)
        self.pump()
        for protocol in connections:
            if not protocol.conn.sessions:
                protocol.close()
        return True

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMBConnection(self), host, port, reuse_address=True)
        self._servers.append(server)
        return [sock.getsockname()[:2] for sock in server.sockets]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._break_timer is not None:
            self._break_timer.cancel()

    async def __aenter__(self) -> SMBServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
