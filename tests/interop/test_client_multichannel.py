"""Multichannel on loopback: Ferry's client over several channels of one session, against
Ferry's server (advertising 127.0.0.1 and 127.0.0.2) and Samba's smbd (127.0.0.1 and ::1,
``server multi channel support = yes``, ``interfaces`` with speed, RSS and if_index), each
address as a 10 Gb/s RSS interface.

The client's local interfaces are given, not read from the kernel (the kernel has one ``lo``,
which pairs with one server interface): two 10 Gb/s RSS interfaces, one per server address,
and the selection policy allows loopback and plans two connections per interface, so the
session has four channels. A 256 MiB copy goes both ways with matching SHA-256; one channel's
socket is shut down mid-copy: the copy completes with the right bytes, the session's
ChannelSequence moves on, and the lost channel is re-opened and bound again. The MB/s of one
channel and of four are printed (``-s``); they are figures, not assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from smbcore.aio_client import SMBClient
from smbcore.aio_multichannel import MultichannelClient, MultichannelOptions
from smbcore.client import ClientConfig
from smbcore.fileops import CloseRequest, CreateContext, CreateDisposition, CreateRequest, CreateResponse
from smbcore.header import Command
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo
from smbcore.multichannel import ChannelKey
from smbcore.negotiate import Dialect
from smbcore.ntstatus import NTStatus
from smbcore.selection import Nic, NicAddress, NicClass, RdmaKind, SelectionPolicy, Transport
from smbcore.transfer import copy_from_share, copy_to_share

from tests.interop.client_suite import sha256
from tests.support.samba import samba_server
from tests.support.smbserver import PASSWORD, USER, smb_server

MiB = 1 << 20
BIG = 256 * MiB
TEN_G = 10_000_000_000
CHANNELS = 4
RSS = InterfaceCapability.RSS
RDMA = InterfaceCapability.RDMA


@dataclass
class McPeer:
    name: str
    host: str
    port: int
    user: str
    password: str
    share: Path  # the folder the "data" share serves
    local: list[Nic]  # the client's interfaces, one per server address
    pairs: set[ChannelKey]  # the (source, server) pairs the plan must have
    server_channels: Callable[[int], int] | None  # channels the server has for a session id
    interfaces: list[NetworkInterfaceInfo] | None = None  # what the server advertises (Ferry's)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


def rss_nic(name: str, index: int, address: str, prefix: int) -> Nic:
    return Nic(name, index, (NicAddress(address, prefix),), TEN_G, rss_capable=True, rx_queues=None)


class MultichannelSuite:
    """Subclasses provide ``peer`` (class scope)."""

    @pytest.fixture(scope="class")
    @classmethod
    def big_file(cls, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
        path = tmp_path_factory.mktemp("mc-big") / "random.bin"
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for _ in range(BIG // (16 * MiB)):
                chunk = os.urandom(16 * MiB)
                digest.update(chunk)
                f.write(chunk)
        return path, digest.hexdigest()

    async def connect(
        self,
        peer: McPeer,
        *,
        channels: int = CHANNELS,
        dialect: int | None = None,
        encrypt: bool = False,
        requery_interval: float = 600.0,
        local: list[Nic] | None = None,
    ) -> MultichannelClient:
        options = MultichannelOptions(
            enabled=channels > 1, max_channels=channels, rebind_delay=0.2, rebind_max_delay=1.0,
            policy=SelectionPolicy(allow_loopback=True, rss_connections=2), requery_interval=requery_interval,
        )  # fmt: skip
        config = ClientConfig(dialects=(dialect,)) if dialect is not None else ClientConfig()
        return await MultichannelClient.connect(
            peer.host, peer.port, user=peer.user, password=peer.password, options=options, config=config,
            local_interfaces=lambda: peer.local if local is None else local, require_encryption=encrypt,
        )  # fmt: skip

    @pytest.mark.parametrize(
        ("dialect", "encrypt"),
        [(Dialect.SMB_3_0, False), (Dialect.SMB_3_0_2, True), (Dialect.SMB_3_1_1, True)],
    )
    async def test_every_dialect_signed_and_encrypted(
        self, peer: McPeer, dialect: int, encrypt: bool
    ) -> None:
        """Channels bound on 3.0 and 3.0.2 (their NEGOTIATE validated on each) and 3.1.1 (a
        signing key from each channel's own pre-auth hash), with encryption (session keys)."""
        async with await self.connect(peer, dialect=dialect, encrypt=encrypt) as mc:
            tree = await mc.connect_tree("data")
            assert len(mc.session.channels) == CHANNELS and mc.session.encrypted is encrypt
            assert {c.dialect for c in mc.session.channels} == {dialect}
            assert all(c.conn.negotiate_validated for c in mc.session.channels) is (
                dialect != Dialect.SMB_3_1_1
            )
            payload = os.urandom(CHANNELS * 3 * MiB)
            async with await tree.open("dialect.bin", "w") as f:
                assert await f.write(0, payload) == len(payload)
                assert await f.read(0, len(payload)) == payload
            assert all(mc.session.bytes_sent(c) > 0 for c in mc.session.channels)
            await tree.remove("dialect.bin")

    async def test_a_create_replayed_on_another_channel_gets_the_same_open(self, peer: McPeer) -> None:
        """What a replay relies on: the server keeps the CreateGuid of a CREATE with a DH2Q
        context, and answers a CREATE flagged as a replay with the open the first try made."""
        async with await self.connect(peer) as mc:
            tree = await mc.connect_tree("data")
            first, second = mc.session.channels[0], mc.session.channels[-1]
            session = mc.session.session
            dh2q = CreateContext(b"DH2Q", bytes(16) + os.urandom(16))
            body = CreateRequest(
                0x0012019F, 0, 7, CreateDisposition.OVERWRITE_IF, 0x40, "replay.bin", (dh2q,)
            )

            def send(channel: SMBClient, command: Command, body: bytes, replay: bool = False) -> Any:
                return channel.start(
                    lambda now: channel.conn.request(
                        command, body, session=session, tree=tree.tree, now=now, replay=replay
                    )
                )

            opened = await send(first, Command.CREATE, body.encode())
            assert opened.status == NTStatus.SUCCESS
            again = await send(second, Command.CREATE, body.encode(), replay=True)
            assert again.status == NTStatus.SUCCESS, hex(again.status)
            file_id = opened.expect(CreateResponse).file_id
            assert again.expect(CreateResponse).file_id == file_id
            contexts = sorted(c.name for c in opened.expect(CreateResponse).contexts)
            print(f"\n{peer.name}: CREATE with DH2Q (no oplock) answered with contexts {contexts}")
            closed = await send(first, Command.CLOSE, CloseRequest(24, 0, 0, file_id).to_bytes())
            assert closed.status == NTStatus.SUCCESS
            await tree.remove("replay.bin")

    async def test_a_first_connection_the_plan_does_not_have_is_retired(self, peer: McPeer) -> None:
        """Only the second pair is planned: the connection the session was established on is
        closed once a planned channel is up, and the session lives on without it."""
        async with await self.connect(peer, local=peer.local[1:]) as mc:
            first = mc.session.client
            tree = await mc.connect_tree("data")
            (planned,) = {ChannelKey.of(p) for p in mc.plan.channels} if mc.plan else set()
            assert planned != first.key
            await eventually(lambda: first.closed)
            assert [ChannelKey(c.local, c.remote) for c in mc.channels] == [planned, planned]
            assert mc.failures == 0 and mc.session.channel_failures == 0
            server_channels = peer.server_channels
            if server_channels is not None:  # the server notices the closed connection soon
                await eventually(lambda: server_channels(mc.session.session_id) == 2)
            async with await tree.open("moved.txt", "w") as f:
                await f.write(0, b"still here")
            assert (peer.share / "moved.txt").read_bytes() == b"still here"
            await tree.remove("moved.txt")

    async def test_the_interfaces_are_queried_again_periodically(self, peer: McPeer) -> None:
        async with await self.connect(peer, requery_interval=0.3) as mc:
            await mc.connect_tree("data")
            first_plan = mc.plan
            await eventually(lambda: mc.plan is not first_plan, 5.0)
            assert mc.plan is not None and mc.plan.connections == CHANNELS
            assert len(mc.session.channels) == CHANNELS

    async def test_the_session_has_four_channels_over_both_pairs(self, peer: McPeer) -> None:
        async with await self.connect(peer) as mc:
            tree = await mc.connect_tree("data")
            assert mc.plan is not None and mc.plan.connections == CHANNELS
            assert len(mc.session.channels) == CHANNELS
            assert {ChannelKey(c.local, c.remote) for c in mc.channels} == peer.pairs
            assert all(c.speed_bps == TEN_G // 2 for c in mc.channels)  # a pair's speed, shared
            if peer.server_channels is not None:
                assert peer.server_channels(mc.session.session_id) == CHANNELS
            # Every channel can carry the session's requests (each signs with its own key).
            async with await tree.open("hello.txt", "w") as f:
                await asyncio.gather(*(f.write(i * 6, b"hello\n") for i in range(40)))
            assert (peer.share / "hello.txt").read_bytes() == b"hello\n" * 40
            assert all(mc.session.bytes_sent(c) > 0 for c in mc.session.channels)
            await tree.remove("hello.txt")

    @pytest.mark.parametrize("channels", [1, CHANNELS])
    async def test_256_mib_both_ways(
        self, peer: McPeer, big_file: tuple[Path, str], channels: int, tmp_path: Path
    ) -> None:
        source, digest = big_file
        async with await self.connect(peer, channels=channels) as mc:
            tree = await mc.connect_tree("data")
            assert len(mc.session.channels) == channels
            start = time.perf_counter()
            assert await copy_to_share(source, tree, "big.bin") == BIG
            put = time.perf_counter() - start
            assert sha256(peer.share / "big.bin") == digest
            start = time.perf_counter()
            assert await copy_from_share(tree, "big.bin", tmp_path / "back.bin") == BIG
            get = time.perf_counter() - start
            assert sha256(tmp_path / "back.bin") == digest
            used = mc.channels_used()
            assert len(used) == channels
            if channels > 1:  # each channel carried a fair part (equal speeds)
                assert min(c.bytes for c in used) > 2 * BIG / channels / 4
            await tree.remove("big.bin")
        print(
            f"\n{peer.name}, {channels} channel(s): 256 MiB to the share {BIG / put / 1e6:.0f} MB/s,"
            f" back {BIG / get / 1e6:.0f} MB/s"
        )

    @pytest.mark.parametrize("direction", ["to-share", "from-share"])
    async def test_a_channel_killed_mid_copy(
        self, peer: McPeer, big_file: tuple[Path, str], direction: str, tmp_path: Path
    ) -> None:
        """One channel's socket is shut down once 64 MiB have gone: its requests are replayed on
        the others, the copy completes with the right bytes, the channel comes back."""
        source, digest = big_file
        if direction == "from-share":
            shutil.copyfile(source, peer.share / "killed.bin")
        async with await self.connect(peer) as mc:
            tree = await mc.connect_tree("data")
            victims: list[SMBClient] = []
            killed: list[int] = []

            def progress(done: int, total: int) -> None:
                if done >= 64 * MiB and not killed:  # the busiest channel goes
                    victim = max(mc.session.channels, key=mc.session.inflight)
                    victims.append(victim)
                    killed.append(mc.session.inflight(victim))
                    victim._sock.shutdown(socket.SHUT_RDWR)

            async with asyncio.timeout(120):
                if direction == "to-share":
                    assert await copy_to_share(source, tree, "killed.bin", progress=progress) == BIG
                    assert sha256(peer.share / "killed.bin") == digest
                else:
                    back = tmp_path / "back.bin"
                    assert await copy_from_share(tree, "killed.bin", back, progress=progress) == BIG
                    assert sha256(back) == digest
            (victim,) = victims
            # (What was in flight on it was replayed, unless its answer was already received:
            # the unit tests count replays exactly; here, the bytes say nothing was lost.)
            assert victim.closed
            assert mc.failures == 1 and mc.session.channel_failures == 1
            assert mc.session.session.channel_sequence == 1
            # The lost pair is re-opened and bound again.
            await mc.wait_for_channels(CHANNELS, 30)
            assert mc.rebinds >= 1 and victim not in mc.session.channels
            assert {ChannelKey(c.local, c.remote) for c in mc.channels} == peer.pairs
            server_channels = peer.server_channels
            if server_channels is not None:  # once the server has noticed the killed one
                await eventually(lambda: server_channels(mc.session.session_id) == CHANNELS)
            # ... and used: the writes that follow go over every channel (1 MiB each, so that a
            # channel busy with a re-plan's FSCTL is not passed over for all of them).
            async with await tree.open("after.txt", "w") as f:
                block = os.urandom(MiB)
                await asyncio.gather(*(f.write(i * MiB, block) for i in range(3 * CHANNELS)))
            assert all(mc.session.bytes_sent(c) > 0 for c in mc.session.channels)
            await tree.remove("after.txt")
            await tree.remove("killed.bin")
        print(
            f"\n{peer.name}, {direction}: {killed[0]} request(s) in flight on the killed channel,"
            f" {mc.session.replayed} replayed, {mc.session.retried} retried (FILE_NOT_AVAILABLE),"
            f" {mc.rebinds} re-bound"
        )


class TestMultichannelAgainstFerry(MultichannelSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def peer(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McPeer]:
        root = tmp_path_factory.mktemp("mc-ferry")
        interfaces = [
            NetworkInterfaceInfo(1, RSS, TEN_G, "127.0.0.1"),
            NetworkInterfaceInfo(2, RSS, TEN_G, "127.0.0.2"),
        ]
        with smb_server(root, interfaces=interfaces) as running:
            asyncio.run_coroutine_threadsafe(
                running.server.start("127.0.0.2", running.port), running.loop
            ).result()
            state = running.server.state
            local = [rss_nic("lo-a", 1, "127.0.0.1", 31), rss_nic("lo-b", 2, "127.0.0.2", 31)]
            pairs = {ChannelKey("127.0.0.1", "127.0.0.1"), ChannelKey("127.0.0.2", "127.0.0.2")}
            yield McPeer(
                "ferry", running.host, running.port, USER, PASSWORD, root / "data", local, pairs,
                lambda sid: len(state.sessions[sid].channels), interfaces,
            )  # fmt: skip

    async def test_a_new_plan_retires_a_pair_the_server_no_longer_offers(self, peer: McPeer) -> None:
        assert peer.interfaces is not None
        async with await self.connect(peer) as mc:
            await mc.connect_tree("data")
            assert len(mc.session.channels) == CHANNELS
            dropped = peer.interfaces.pop()  # the server stops advertising 127.0.0.2
            try:
                plan = await mc.refresh()
                assert plan is not None and plan.connections == 2
                assert len(mc.session.channels) == 2  # at once: nothing more is sent on them
                server_channels = peer.server_channels
                assert server_channels is not None
                await eventually(lambda: server_channels(mc.session.session_id) == 2)  # closed when idle
                assert {ChannelKey(c.local, c.remote) for c in mc.channels} == {
                    ChannelKey("127.0.0.1", "127.0.0.1")
                }
                assert mc.failures == 0  # retired, not lost
            finally:
                peer.interfaces.append(dropped)
            await mc.refresh(wait=True)  # the server offers it again: opened again
            assert len(mc.session.channels) == CHANNELS
            assert {ChannelKey(c.local, c.remote) for c in mc.channels} == peer.pairs

    async def test_rdma_interfaces_are_planned_as_tcp_ones(self, peer: McPeer) -> None:
        """This client has no SMB Direct: RDMA-capable interfaces on both sides are planned as
        the RSS interfaces they also are (four TCP connections, not two RDMA ones)."""
        assert peer.interfaces is not None
        saved = list(peer.interfaces)
        peer.interfaces[:] = [dataclasses.replace(i, capabilities=RSS | RDMA) for i in saved]
        local = [dataclasses.replace(n, rdma_kind=RdmaKind.IWARP) for n in peer.local]
        try:
            async with await self.connect(peer, local=local) as mc:
                await mc.connect_tree("data")
                assert mc.plan is not None
                assert mc.plan.nic_class is NicClass.RSS and mc.plan.transport is Transport.TCP
                assert len(mc.session.channels) == CHANNELS
        finally:
            peer.interfaces[:] = saved


class TestMultichannelAgainstSamba(MultichannelSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def peer(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McPeer]:
        # smbd advertises only addresses the kernel has: 127.0.0.1 and ::1, as two interfaces.
        interfaces = " ".join(
            f'"{address};speed={TEN_G},capability=RSS,if_index={index}"'
            for index, address in ((1, "127.0.0.1"), (2, "::1"))
        )
        options = {
            "server multi channel support": "yes",
            "interfaces": interfaces,
            "bind interfaces only": "yes",
        }
        with samba_server(tmp_path_factory.mktemp("mc-samba"), shares={"data": {}}, options=options) as smbd:
            local = [rss_nic("lo4", 1, "127.0.0.1", 8), rss_nic("lo6", 2, "::1", 128)]
            pairs = {ChannelKey("127.0.0.1", "127.0.0.1"), ChannelKey("::1", "::1")}
            yield McPeer(
                "samba", smbd.host, smbd.port, smbd.user, smbd.password, smbd.shares["data"], local, pairs,
                None,
            )  # fmt: skip
