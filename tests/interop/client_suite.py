"""Ferry's SMB client against a real server: one suite, run against each server by a
subclass that provides the ``peer`` fixture (test_client_ferry.py, test_client_samba.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from smbcore.aio_client import SMBClient, SMBTree
from smbcore.client import ClientConfig, SessionState
from smbcore.client_errors import (
    BadNetworkName,
    ConnectionLost,
    LogonFailure,
    SMBConnectionError,
    SMBDirectoryNotEmptyError,
    SMBFileExistsError,
    SMBFileNotFoundError,
)
from smbcore.negotiate import Dialect
from smbcore.ntstatus import NTStatus
from smbcore.transfer import copy_from_share, copy_to_share

MiB = 1 << 20
BIG = 256 * MiB
DIALECTS = {"3.0": Dialect.SMB_3_0, "3.0.2": Dialect.SMB_3_0_2, "3.1.1": Dialect.SMB_3_1_1}


@dataclass
class Peer:
    """A running server as the suite sees it."""

    name: str
    host: str
    port: int
    user: str
    password: str
    shares: dict[str, Path]  # share name -> the folder it serves, to check what landed
    drop_connections: Callable[[], Awaitable[None]]  # the server drops every client connection


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ClientSuite:
    """Subclasses provide ``peer`` (class scope) and ``big_file`` comes from here."""

    @pytest.fixture(scope="class")
    @classmethod
    def big_file(cls, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
        path = tmp_path_factory.mktemp("client-big") / "random.bin"
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for _ in range(BIG // (16 * MiB)):
                chunk = os.urandom(16 * MiB)
                digest.update(chunk)
                f.write(chunk)
        return path, digest.hexdigest()

    async def connect(self, peer: Peer, **config: object) -> SMBClient:
        return await SMBClient.connect(peer.host, peer.port, config=ClientConfig(**config))  # type: ignore[arg-type]

    async def login_tree(self, client: SMBClient, peer: Peer, share: str = "data", **kw: bool) -> SMBTree:
        session = await client.login(peer.user, peer.password, **kw)
        return await session.connect_tree(share)

    # -- sessions ------------------------------------------------------------------------------

    @pytest.mark.parametrize("mode", ["signed", "encrypted"])
    @pytest.mark.parametrize("dialect", list(DIALECTS))
    async def test_login_on_each_dialect(self, peer: Peer, dialect: str, mode: str) -> None:
        encrypted = mode == "encrypted"
        async with await self.connect(peer, dialects=(DIALECTS[dialect],)) as client:
            assert client.dialect == DIALECTS[dialect]
            session = await client.login(peer.user, peer.password, require_encryption=encrypted)
            assert session.session.state is SessionState.VALID
            assert session.encrypted is encrypted
            assert session.session.signing_required
            tree = await session.connect_tree("data")
            name = f"login-{dialect}-{mode}.txt"
            async with await tree.open(name, "w") as f:
                assert await f.write(0, b"over " + dialect.encode()) == 5 + len(dialect)
                assert await f.read(0, 100) == b"over " + dialect.encode()
            assert (peer.shares["data"] / name).read_bytes() == b"over " + dialect.encode()
            await tree.remove(name)
            await session.logoff()
            assert session.session.state is SessionState.CLOSED

    async def test_share_that_requires_encryption(self, peer: Peer) -> None:
        async with await self.connect(peer) as client:
            session = await client.login(peer.user, peer.password)
            assert not session.encrypted
            tree = await session.connect_tree("secret")
            assert tree.tree.encrypt_data and tree.encrypted
            async with await tree.open("sealed.bin", "w") as f:
                await f.write(0, b"sealed" * 1000)
            assert (peer.shares["secret"] / "sealed.bin").read_bytes() == b"sealed" * 1000
            await tree.remove("sealed.bin")

    async def test_wrong_password_is_a_clear_error(self, peer: Peer) -> None:
        async with await self.connect(peer) as client:
            with pytest.raises(LogonFailure) as failed:
                await client.login(peer.user, peer.password + "-wrong")
            assert failed.value.status == NTStatus.LOGON_FAILURE
            assert isinstance(failed.value, PermissionError)
            await self.login_tree(client, peer)  # the connection is still good

    async def test_unknown_share_is_a_clear_error(self, peer: Peer) -> None:
        async with await self.connect(peer) as client:
            session = await client.login(peer.user, peer.password)
            with pytest.raises(BadNetworkName) as failed:
                await session.connect_tree("no-such-share")
            assert failed.value.status == NTStatus.BAD_NETWORK_NAME
            assert "no-such-share" in str(failed.value)

    # -- files ---------------------------------------------------------------------------------

    async def test_file_operations(self, peer: Peer) -> None:
        root = peer.shares["data"]
        async with await self.connect(peer) as client:
            tree = await self.login_tree(client, peer)
            await tree.mkdir("ops")
            with pytest.raises(SMBFileExistsError):
                await tree.mkdir("ops")
            async with await tree.open("ops/a.bin", "x") as f:
                assert await f.write(0, b"0123456789") == 10
                assert await f.write(20, b"tail") == 4  # a hole in between
                info = await f.stat()
                assert info.size == 24 and not info.is_dir
                assert await f.read(0, 100) == b"0123456789" + bytes(10) + b"tail"
                assert await f.read(100, 10) == b""  # past the end
                await f.truncate(5)
                assert (await f.stat()).size == 5
                await f.flush()
            with pytest.raises(SMBFileExistsError):
                await tree.open("ops/a.bin", "x")
            assert (root / "ops" / "a.bin").read_bytes() == b"01234"
            assert (await tree.stat("ops/a.bin")).size == 5
            assert (await tree.stat("ops")).is_dir
            await tree.mkdir("ops/sub")
            assert sorted(await tree.listdir("ops")) == ["a.bin", "sub"]
            entries = {e.name: e.info for e in await tree.scandir("ops")}
            assert entries["sub"].is_dir and entries["a.bin"].size == 5
            await tree.rename("ops/a.bin", "ops/sub/b.bin")
            assert await tree.listdir("ops/sub") == ["b.bin"]
            await tree.rename("ops/sub", "ops/moved")
            assert (root / "ops" / "moved" / "b.bin").read_bytes() == b"01234"
            with pytest.raises(SMBDirectoryNotEmptyError):
                await tree.rmdir("ops/moved")
            with pytest.raises(SMBFileNotFoundError):
                await tree.open("ops/missing.bin")
            with pytest.raises(FileNotFoundError):
                await tree.stat("nowhere/at/all")
            assert not await tree.exists("ops/missing.bin")
            await tree.remove("ops/moved/b.bin")
            await tree.rmdir("ops/moved")
            await tree.rmdir("ops")
            assert not (root / "ops").exists()
            assert "ops" not in await tree.listdir()

    async def test_many_requests_in_flight(self, peer: Peer) -> None:
        """Hundreds of small requests from many tasks at once share credits and MessageIds."""
        async with await self.connect(peer) as client:
            tree = await self.login_tree(client, peer)
            files = [await tree.open(f"flight-{i}.bin", "w") for i in range(8)]
            blocks = {(i, j): os.urandom(4096) for i in range(8) for j in range(64)}
            await asyncio.gather(*(files[i].write(j * 4096, data) for (i, j), data in blocks.items()))
            back = await asyncio.gather(*(files[i].read(j * 4096, 4096) for (i, j) in blocks))
            assert back == list(blocks.values())
            await asyncio.gather(*(f.close() for f in files))
            for i in range(8):
                expected = b"".join(blocks[i, j] for j in range(64))
                assert (peer.shares["data"] / f"flight-{i}.bin").read_bytes() == expected
                await tree.remove(f"flight-{i}.bin")

    async def test_streaming_writer_with_back_pressure(self, peer: Peer) -> None:
        """Odd-sized chunks, whole-request chunks and in-place buffers, through a 1 MiB window."""
        rng = random.Random(7)
        async with await self.connect(peer, window_bytes=1 * MiB) as client:
            tree = await self.login_tree(client, peer)
            expected = bytearray()
            in_flight_max = 0
            async with await tree.open("stream.bin", "w") as f, f.writer() as writer:
                for _ in range(200):
                    chunk = os.urandom(rng.choice([1, 100, 4096, 65536, 300_000, 1 * MiB, 3 * MiB]))
                    await writer.write(chunk)
                    expected += chunk
                    in_flight_max = max(in_flight_max, client.window.size - client.window.free)
                for _ in range(4):
                    buffer = await writer.get_buffer()
                    data = os.urandom(len(buffer) // 2)
                    buffer[: len(data)] = data
                    await writer.commit(len(data))
                    expected += data
                await writer.flush()
                assert writer.acknowledged == len(expected)
            assert in_flight_max <= client.window.size
            assert sha256(peer.shares["data"] / "stream.bin") == hashlib.sha256(expected).hexdigest()
            await tree.remove("stream.bin")

    @pytest.mark.parametrize("mode", ["signed", "encrypted"])
    async def test_256_mib_round_trip(
        self, peer: Peer, big_file: tuple[Path, str], mode: str, tmp_path: Path
    ) -> None:
        source, digest = big_file
        async with await self.connect(peer) as client:
            tree = await self.login_tree(client, peer, require_encryption=mode == "encrypted")
            progress: list[int] = []
            start = time.perf_counter()
            assert (
                await copy_to_share(source, tree, "big.bin", progress=lambda done, _: progress.append(done))
                == BIG
            )
            put = time.perf_counter() - start
            assert progress == sorted(progress) and progress[-1] == BIG
            assert sha256(peer.shares["data"] / "big.bin") == digest
            start = time.perf_counter()
            assert await copy_from_share(tree, "big.bin", tmp_path / "back.bin") == BIG
            get = time.perf_counter() - start
            assert sha256(tmp_path / "back.bin") == digest
            await tree.remove("big.bin")
        print(
            f"\n{peer.name}, {mode}, dialect {client.dialect:#06x}: 256 MiB to the share"
            f" {BIG / put / 1e6:.0f} MB/s, back {BIG / get / 1e6:.0f} MB/s"
        )

    # -- failures ------------------------------------------------------------------------------

    @pytest.mark.parametrize("direction", ["to-share", "from-share"])
    async def test_connection_dropped_mid_transfer(
        self, peer: Peer, big_file: tuple[Path, str], direction: str
    ) -> None:
        """The server drops the connection once 32 MiB have gone through: the transfer fails
        with ConnectionLost, every later call at once, and nothing hangs."""
        source, _ = big_file
        client = await self.connect(peer, window_bytes=16 * MiB)
        tree = await self.login_tree(client, peer)
        if direction == "from-share":
            await copy_to_share(source, tree, "dropped.bin")
        moved = 0

        async def transfer() -> None:
            nonlocal moved
            if direction == "to-share":
                async with await tree.open("dropped.bin", "w") as f, f.writer() as writer:
                    with source.open("rb") as local:
                        while chunk := local.read(4 * MiB):
                            await writer.write(chunk)
                            moved += len(chunk)
                            if moved == 32 * MiB:
                                await peer.drop_connections()
            else:
                async with await tree.open("dropped.bin") as f:
                    async for _, data in f.chunks(0, BIG):
                        moved += len(data)
                        if moved == 32 * MiB:
                            await peer.drop_connections()

        async with asyncio.timeout(60):  # nothing may hang
            with pytest.raises(SMBConnectionError) as lost:
                await transfer()
        assert 32 * MiB <= moved < BIG
        assert isinstance(lost.value, ConnectionLost), repr(lost.value)
        assert client.closed
        with pytest.raises(ConnectionLost):  # and so does everything after it, at once
            await tree.stat("dropped.bin")
        await client.close()
        async with await self.connect(peer) as again:
            tree = await self.login_tree(again, peer)
            await tree.remove("dropped.bin")
