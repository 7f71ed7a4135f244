"""The asyncio shell around :class:`~smbcore.server.ServerConnection`: Direct TCP.

One :class:`asyncio.BufferedProtocol` per connection: the transport receives straight into
the :class:`~smbcore.pdureader.PDUReader`'s buffers (a large WRITE lands in a buffer of its
own, once), PDUs out are framed and written piece by piece (a READ's data is never joined
to its header), and reading pauses while the transport's send buffer is full, so a client
that does not read its responses cannot make the server buffer without bound. A protocol
error closes only that connection; the
listener and the other connections carry on. Idle connections are closed after
``handshake_timeout`` (before a session is established) or ``idle_timeout``.

All connections share one :class:`~smbcore.server.ServerState` (sessions bound to several
connections, opens, oplocks): after anything reaches the core, :meth:`SMBServer.pump` sends
what every affected connection has to send, starts their file operations, releases dropped
handles and arms the oplock-break timer. A file operation still running after
``interim_response_delay`` gets an interim STATUS_PENDING response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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
    ServerConnection,
    ServerIdentity,
    ServerPolicy,
    ServerState,
    SessionState,
    Share,
)

log = logging.getLogger(__name__)

#: Pieces up to this size are copied together into one write; larger ones are written as they are.
_COALESCE = 16 * 1024

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


class _SMBProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: SMBServer) -> None:
        self._server = server
        self._settings = server.settings
        self._reader = PDUReader(self._settings.limits.max_pdu)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = "?"
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
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._server.attach(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # Running operations finish (their results are dropped by the core, handles released);
        # waiting ones are told to stop.
        files = self._settings.files
        if isinstance(files, CancellableFileService):
            for op_id in list(self._running):
                files.cancel(op_id)
        self.conn.connection_lost()
        self._server.detach(self)
        self._server.pump()

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

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

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
        for event in self.conn.events():
            if isinstance(event, CancelOperation):
                if isinstance(files, CancellableFileService) and event.op_id in self._running:
                    files.cancel(event.op_id)
                continue
            self._running[event.op_id] = event
            task = asyncio.get_running_loop().create_task(self._run(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
        transport.close()

    def _send_output(self) -> None:
        """Frame and write the PDUs the core produced: small pieces (the frame header, SMB2
        headers, small bodies) go out together, a large piece by itself and uncopied (on
        Python 3.11 ``writelines`` would join them)."""
        out = self.conn.data_to_send()
        transport = self._transport
        if not out or transport is None or transport.is_closing():
            return
        small = bytearray()
        for pieces in out:
            small += frame_header(sum(len(p) for p in pieces))
            for piece in pieces:
                if len(piece) <= _COALESCE:
                    small += piece
                    continue
                if small:
                    transport.write(small)
                    small = bytearray()
                transport.write(piece)
        if small:
            transport.write(small)


class SMBServer:
    """A listening SMB server; ``async with`` or :meth:`start` / :meth:`close`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.connections: set[_SMBProtocol] = set()
        self._by_core: dict[ServerConnection, _SMBProtocol] = {}
        self._servers: list[asyncio.Server] = []
        self._break_timer: asyncio.TimerHandle | None = None
        self.state = ServerState(clock=self._now, shares=settings.shares)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def attach(self, protocol: _SMBProtocol) -> None:
        self.connections.add(protocol)
        self._by_core[protocol.conn] = protocol

    def detach(self, protocol: _SMBProtocol) -> None:
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

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _SMBProtocol(self), host, port, reuse_address=True)
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
