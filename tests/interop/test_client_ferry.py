"""Ferry's SMB client against Ferry's own server (running in a thread of the test process)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.interop.client_suite import ClientSuite, Peer
from tests.support.smbserver import PASSWORD, USER, RunningServer, smb_server


def _abort_all(running: RunningServer) -> None:
    for connection in list(running.server.connections):
        transport = connection._transport
        if transport is not None:
            transport.abort()


class TestClientAgainstFerry(ClientSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def peer(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
        root = tmp_path_factory.mktemp("client-ferry")
        with smb_server(root) as running:

            async def drop_connections() -> None:
                future = asyncio.run_coroutine_threadsafe(asyncio.to_thread(lambda: None), running.loop)
                running.loop.call_soon_threadsafe(_abort_all, running)
                await asyncio.wrap_future(future)

            yield Peer(
                "ferry", running.host, running.port, USER, PASSWORD,
                {"data": root / "data", "secret": root / "secret"}, drop_connections,
            )  # fmt: skip
