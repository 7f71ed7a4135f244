"""Ferry's SMB client against Samba's smbd, started by the test with a private configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.interop.client_suite import ClientSuite, Peer
from tests.support.samba import samba_server


class TestClientAgainstSamba(ClientSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def peer(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
        with samba_server(tmp_path_factory.mktemp("client-samba")) as smbd:

            async def drop_connections() -> None:
                await asyncio.to_thread(smbd.kill_client_connections)

            yield Peer("samba", smbd.host, smbd.port, smbd.user, smbd.password, smbd.shares, drop_connections)
