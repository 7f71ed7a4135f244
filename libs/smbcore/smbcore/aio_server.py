"""The asyncio shell around :class:`~smbcore.server.ServerConnection`: Direct TCP.

One :class:`asyncio.Protocol` per connection: bytes in go through the
:class:`~smbcore.framing.FrameDecoder` to the core, PDUs out are framed and written with
``writelines`` (no concatenation). A protocol error closes only that connection; the
listener and the other connections carry on. Idle connections are closed after
``handshake_timeout`` (before a session is established) or ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .config import ServerLimits
from .errors import SMBProtocolError
from .fileops import FileTimes
from .framing import FrameDecoder, frame_header
from .ioctl import NetworkInterfaceInfo
from .ntstatus import NTStatus
from .server import (
    Authenticator,
    FileOperation,
    FileResult,
    ServerConnection,
    ServerIdentity,
    ServerPolicy,
    SessionState,
    Share,
)

log = logging.getLogger(__name__)

#: Seconds between 1601-01-01 and 1970-01-01, for FILETIME.
_EPOCH_DELTA = 11_644_473_600


def filetime_now() -> int:
    return int((time.time() + _EPOCH_DELTA) * 10_000_000)


class FileService(Protocol):
    """Carries out file operations for the server (see :mod:`smbcore.fileservice`)."""

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]: ...

    def release(self, handle: object) -> None: ...


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


class _SMBProtocol(asyncio.Protocol):
    def __init__(self, server: SMBServer) -> None:
        self._server = server
        self._settings = server.settings
        self._frames = FrameDecoder(self._settings.limits.max_pdu)
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
            session_ids=server.next_session_id,
            interfaces=self._settings.interfaces,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._server.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        for opened in self.conn.opens.values():
            self._settings.files.release(opened.handle)
        self.conn.opens.clear()

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

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            self._frames.receive_data(data)
            while (pdu := self._frames.next_pdu()) is not None:
                self.conn.receive_pdu(pdu)
                self._after_core()
        except SMBProtocolError as exc:
            self._fail(exc)
            return
        except Exception:  # a bug: close this connection only, and say where
            log.exception("closing connection after an internal error", extra={"peer": self.peer})
            transport.close()
            return
        self._arm_timer()

    def _after_core(self) -> None:
        """Send what the core produced, release what it closed, start what it asked for."""
        transport = self._transport
        assert transport is not None
        self._send_output()
        for handle in self.conn.handles_to_close():
            self._settings.files.release(handle)
        for op in self.conn.events():
            task = asyncio.get_running_loop().create_task(self._run(op))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, op: FileOperation) -> None:
        try:
            result, create = await self._settings.files.run(op)
        except Exception:  # a bug in the file service: answer, keep the connection
            log.exception("file operation failed", extra={"peer": self.peer, "command": op.command.name})
            result, create = FileResult(NTStatus.UNSUCCESSFUL), None
        if self._transport is None or self._transport.is_closing():
            if result.handle is not None:
                self._settings.files.release(result.handle)
            return
        try:
            self.conn.complete(op.op_id, result, create)
            self._after_core()
        except SMBProtocolError as exc:
            self._fail(exc)

    def _fail(self, exc: SMBProtocolError) -> None:
        transport = self._transport
        assert transport is not None
        log.warning("closing connection after a protocol error", extra={"peer": self.peer, "error": str(exc)})
        self._send_output()  # e.g. the error answer to the request that broke the rules
        transport.close()

    def _send_output(self) -> None:
        """Frame and write the PDUs the core produced."""
        out = self.conn.data_to_send()
        if out:
            assert self._transport is not None
            self._transport.writelines([piece for p in out for piece in (frame_header(len(p)), p)])


class SMBServer:
    """A listening SMB server; ``async with`` or :meth:`start` / :meth:`close`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.connections: set[_SMBProtocol] = set()
        self._servers: list[asyncio.Server] = []
        self._session_counter = 0

    def next_session_id(self) -> int:
        """Session ids unique across the server's connections (binding needs that)."""
        self._session_counter += 1
        return (self._session_counter << 16) | 0x0001

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

    async def __aenter__(self) -> SMBServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
