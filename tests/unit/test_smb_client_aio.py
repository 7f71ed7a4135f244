"""The client's asyncio shell over real sockets on 127.0.0.1, against Ferry's server shell in
the same event loop with a file service whose READs take as long as a test wants: request
timeouts, STATUS_PENDING extending them, connection loss, a silent server; and the byte window."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from smbcore.aio_client import ByteWindow, SMBClient
from smbcore.aio_server import ServerSettings, SMBServer
from smbcore.auth import ServerAuthenticator, UserDatabase
from smbcore.client import ClientConfig
from smbcore.client_errors import ConnectionClosed, ConnectionLost, SMBTimeoutError
from smbcore.config import ServerLimits
from smbcore.fileops import CloseRequest, CreateAction, FileTimes, ReadRequest, encode_close_response
from smbcore.fileops import encode_read_response_head as read_head
from smbcore.header import Command
from smbcore.ntstatus import NTStatus
from smbcore.server import FileOperation, FileResult, Share

PASSWORD = "Pa55-word!"
TIMES = FileTimes(1, 2, 3, 4, 4096, 10, 0x20)


@dataclass
class SlowFiles:
    """One ten-byte file; a READ takes ``delay`` seconds."""

    delay: float = 0.0

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        request = op.request
        if op.command is Command.CREATE:
            return FileResult(NTStatus.SUCCESS, handle=object()), (CreateAction.OPENED, TIMES)
        if isinstance(request, ReadRequest):
            await asyncio.sleep(self.delay)
            data = b"0123456789"[request.offset : request.offset + request.length]
            return FileResult(NTStatus.SUCCESS, read_head(len(data)) + data), None
        if isinstance(request, CloseRequest):
            return FileResult(NTStatus.SUCCESS, encode_close_response(0, None)), None
        return FileResult(NTStatus.NOT_SUPPORTED), None

    def release(self, handle: object) -> None:
        pass


@dataclass
class Running:
    server: SMBServer
    port: int
    files: SlowFiles

    def drop_connections(self) -> None:
        for connection in list(self.server.connections):
            if connection._transport is not None:
                connection._transport.abort()


@contextlib.asynccontextmanager
async def running_server(tmp: Path, interim_after: float) -> AsyncIterator[Running]:
    users = UserDatabase(tmp / "users.db")
    users.add_user("alice", PASSWORD)
    files = SlowFiles()
    settings = ServerSettings(
        shares={"data": Share("data", path=str(tmp))},
        authenticator_factory=lambda: ServerAuthenticator(users),
        initial_token=ServerAuthenticator.initial_token(),
        limits=ServerLimits(interim_response_delay=interim_after),
        files=files,
    )
    server = SMBServer(settings)
    ((_, port),) = await server.start("127.0.0.1", 0)
    try:
        yield Running(server, port, files)
    finally:
        await server.close()


async def open_file(running: Running, **config: float) -> tuple[SMBClient, object]:
    client = await SMBClient.connect("127.0.0.1", running.port, config=ClientConfig(**config))  # type: ignore[arg-type]
    session = await client.login("alice", PASSWORD)
    tree = await session.connect_tree("data")
    return client, await tree.open("f.bin")


async def test_status_pending_extends_the_wait(tmp_path: Path) -> None:
    async with running_server(tmp_path, interim_after=0.05) as running:
        client, f = await open_file(running, request_timeout=0.5, pending_timeout=10.0)
        running.files.delay = 1.2
        async with client:
            assert await f.read(0, 10) == b"0123456789"  # type: ignore[attr-defined]


async def test_a_request_without_an_answer_times_out_and_the_connection_stays(tmp_path: Path) -> None:
    async with running_server(tmp_path, interim_after=60.0) as running:
        client, f = await open_file(running, request_timeout=0.3)
        running.files.delay = 0.8
        async with client:
            with pytest.raises(SMBTimeoutError, match="READ") as timed_out:
                await f.read(0, 10)  # type: ignore[attr-defined]
            assert timed_out.value.status == NTStatus.IO_TIMEOUT
            await asyncio.sleep(0.8)  # the late response arrives and is dropped
            running.files.delay = 0.0
            await client.echo()
            assert await f.read(2, 3) == b"234"  # type: ignore[attr-defined]
            assert not client.closed


async def test_connection_loss_fails_everything_in_flight_at_once(tmp_path: Path) -> None:
    async with running_server(tmp_path, interim_after=0.05) as running:
        client, f = await open_file(running)
        running.files.delay = 30.0
        reads = [asyncio.ensure_future(f.read(i, 1)) for i in range(3)]  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
        running.drop_connections()
        async with asyncio.timeout(5):
            results = await asyncio.gather(*reads, return_exceptions=True)
        assert all(isinstance(r, ConnectionLost) for r in results), results
        assert client.closed
        with pytest.raises(ConnectionLost):
            await client.echo()
        await client.close()


async def test_close_fails_requests_in_flight_with_connection_closed(tmp_path: Path) -> None:
    async with running_server(tmp_path, interim_after=60.0) as running:
        client, f = await open_file(running)
        running.files.delay = 30.0
        read = asyncio.ensure_future(f.read(0, 1))  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(ConnectionClosed):
            await read


async def test_a_silent_server_times_out_connect() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(SMBTimeoutError, match="NEGOTIATE"):
            await SMBClient.connect("127.0.0.1", port, config=ClientConfig(connect_timeout=0.3))


async def test_nothing_listening_is_connection_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await SMBClient.connect("127.0.0.1", port)


async def test_byte_window_is_fifo_and_bounded() -> None:
    window = ByteWindow(100)
    assert await window.acquire(60) == 60
    assert window.try_acquire(50) == 0
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await window.acquire(n)
        order.append(name)

    big = asyncio.ensure_future(take("big", 500))  # larger than the window: takes all of it
    await asyncio.sleep(0)
    small = asyncio.ensure_future(take("small", 10))  # waits behind it, though 40 are free
    await asyncio.sleep(0)
    assert order == [] and window.free == 40
    window.release(60)
    await asyncio.sleep(0)
    assert order == ["big"] and window.free == 0
    window.release(100)
    await asyncio.wait_for(small, 1)
    assert order == ["big", "small"] and window.free == 90
    await big


async def test_byte_window_waiter_cancelled() -> None:
    window = ByteWindow(10)
    await window.acquire(10)
    waiter = asyncio.ensure_future(window.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    window.release(10)
    assert window.free == 10
    with pytest.raises(ValueError, match="released more"):
        window.release(1)
