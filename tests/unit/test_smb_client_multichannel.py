"""Multichannel in the client: channel plans from fake NIC lists, the proportional scheduler,
replay bookkeeping and backoff (sans-IO, :mod:`smbcore.multichannel`); binding a second
connection to a session, ChannelSequence and SMB2_FLAGS_REPLAY_OPERATION in the core, in
memory against Ferry's server core; and the asyncio session replaying what a failed channel
had in flight, against Ferry's server shell on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.aio_client import SMBClient, SMBSession
from smbcore.aio_server import ServerSettings, SMBServer
from smbcore.auth import ClientAuthenticator, ServerAuthenticator, UserDatabase
from smbcore.client import (
    BindingFailed,
    ChannelBound,
    ClientConfig,
    ClientConnection,
    Response,
    SessionState,
)
from smbcore.client_errors import ConnectionLost, LogonFailure, SMBStatusError
from smbcore.errors import LocalProtocolError
from smbcore.fileinfo import FileAttributes, FileStat, encode_directory_entries
from smbcore.fileops import (
    CloseRequest,
    CreateAction,
    CreateContext,
    CreateRequest,
    CreateResponse,
    FileTimes,
    QueryDirectoryFlags,
    QueryDirectoryRequest,
    ReadRequest,
    WriteRequest,
    encode_close_response,
    encode_output_buffer_response,
    encode_write_response,
)
from smbcore.fileops import encode_read_response_head as read_head
from smbcore.header import Command, Flags, decode_header
from smbcore.messages import EMPTY4
from smbcore.multichannel import (
    STATUS_FILE_NOT_AVAILABLE,
    Backoff,
    ChannelKey,
    ChannelScheduler,
    ReplayBook,
    ReplayDecision,
    plan_changes,
    replay_decision,
    retry_delay,
)
from smbcore.ntstatus import NTStatus
from smbcore.selection import (
    ChannelPair,
    NicClass,
    Reason,
    Route,
    SelectionPolicy,
    Side,
    Transport,
    connection_speeds,
    from_network_interface_info,
    route_table,
    select_channels,
    speed_weights,
    split_by_weight,
)
from smbcore.server import FileOperation, FileResult, ServerConnection, ServerIdentity, Share

from tests.unit.test_smb_client_core import GUID, PASSWORD, Pair, make_pair
from tests.unit.test_smb_selection import RSS, G, addr, nic

M = 10**6
MiB = 1 << 20

# -- channel planning from fake NIC lists ------------------------------------------------------------


def server_info(*entries: tuple[int, int, int, str]) -> list:  # type: ignore[type-arg]
    from smbcore.ioctl import NetworkInterfaceInfo

    return [NetworkInterfaceInfo(*e) for e in entries]


def test_plan_rdma_before_rss_before_the_rest_with_their_connection_counts() -> None:
    local = [
        nic("eth0", 2, "10.0.0.1/24", rss=False, queues=1),
        nic("eth1", 3, "10.0.1.1/24"),
        nic("ib0", 4, "10.0.2.1/24", rdma="infiniband"),  # type: ignore[arg-type]
    ]
    remote = from_network_interface_info(
        server_info(
            (1, 0, 10 * G, "10.0.0.2"), (2, RSS, 10 * G, "10.0.1.2"), (3, RSS | 2, 10 * G, "10.0.2.2")
        )
    )
    plan = select_channels(local, remote, server="fs1")
    assert plan.nic_class is NicClass.RDMA and plan.transport is Transport.RDMA
    assert [(c.local_name, c.remote_address, c.connections) for c in plan.channels] == [
        ("ib0", "10.0.2.2", 2)
    ]
    without_rdma = select_channels(local[:2], remote, server="fs1")
    assert [(c.local_name, c.connections) for c in without_rdma.channels] == [("eth1", 4)]
    assert without_rdma.decision(Side.LOCAL, "eth0").reason is Reason.TYPE_CLASS
    plain = select_channels(local[:1], remote, server="fs1")
    assert [(c.local_name, c.connections) for c in plain.channels] == [("eth0", 1)]


def test_plan_an_rss_nic_with_one_queue_is_not_rss_and_only_one_speed_is_used() -> None:
    local = [
        nic("eth1", 3, "10.0.1.1/24", queues=1),  # "RSS" with one queue
        nic("eth2", 4, "10.0.2.1/24", queues=1),
        nic("eth3", 5, "10.0.3.1/24", speed=1 * G, queues=1),
    ]
    remote = from_network_interface_info(
        server_info((1, RSS, 10 * G, "10.0.1.2"), (2, RSS, 10 * G, "10.0.2.2"), (3, RSS, 1 * G, "10.0.3.2"))
    )
    plan = select_channels(local, remote)
    assert plan.nic_class is NicClass.PLAIN
    assert [(c.local_name, c.connections) for c in plan.channels] == [("eth1", 1), ("eth2", 1)]
    assert plan.decision(Side.LOCAL, "eth3").reason is Reason.SPEED_CLASS


def test_plan_caps_at_max_channels_and_spreads_evenly() -> None:
    local = [nic(f"eth{i}", i + 2, f"10.0.{i}.1/24") for i in range(10)]
    remote = from_network_interface_info(
        server_info(*((i + 1, RSS, 10 * G, f"10.0.{i}.2") for i in range(10)))
    )
    plan = select_channels(local, remote)
    assert plan.connections == 32  # 10 RSS interfaces want 40
    assert sorted(c.connections for c in plan.channels) == [3] * 8 + [4] * 2
    small = select_channels(local, remote, policy=SelectionPolicy(max_channels=4))
    assert [c.connections for c in small.channels] == [1, 1, 1, 1]
    assert sum(d.reason is Reason.CAPPED for d in small.decisions) == 6


def test_plan_only_reachable_interfaces_with_their_source_address() -> None:
    local = [nic("eth0", 2, "10.0.0.1/24", "10.9.0.1/16"), nic("eth1", 3, "192.168.5.1/24")]
    remote = from_network_interface_info(
        server_info((1, RSS, 10 * G, "10.0.0.2"), (2, RSS, 10 * G, "172.16.0.2"))
    )
    plan = select_channels(local, remote)
    assert [(c.local_name, c.source_address, c.remote_address) for c in plan.channels] == [
        ("eth0", "10.0.0.1", "10.0.0.2")
    ]
    assert plan.decision(Side.LOCAL, "eth1").reason is Reason.UNREACHABLE
    routed = select_channels(local, remote, reachable=route_table([Route("172.16.0.0/16", "eth1")]))
    assert {(c.local_name, c.remote_address) for c in routed.channels} == {
        ("eth0", "10.0.0.2"),
        ("eth1", "172.16.0.2"),
    }


def test_plan_constraints_per_server_name() -> None:
    from smbcore.selection import Constraint

    local = [nic("eth1", 3, "10.0.1.1/24"), nic("eth2", 4, "10.0.2.1/24")]
    remote = from_network_interface_info(
        server_info((1, RSS, 10 * G, "10.0.1.2"), (2, RSS, 10 * G, "10.0.2.2"))
    )
    constraints = [Constraint("FS1", ("eth2",))]
    assert [
        c.local_name for c in select_channels(local, remote, server="fs1", constraints=constraints).channels
    ] == ["eth2"]
    other = select_channels(local, remote, server="fs2", constraints=constraints)
    assert [c.local_name for c in other.channels] == ["eth1", "eth2"]


def test_plan_loopback_only_when_the_policy_allows_it() -> None:
    """One-host tests: 127.0.0.1, 127.0.0.2 and ::1 used like networks."""
    local = [nic("lo-a", 1, "127.0.0.1/31", queues=None), nic("lo-b", 2, "127.0.0.2/31", queues=None)]
    remote = from_network_interface_info(
        server_info((1, RSS, 10 * G, "127.0.0.1"), (2, RSS, 10 * G, "127.0.0.2"))
    )
    refused = select_channels(local, remote)
    assert not refused.channels
    assert {d.reason for d in refused.decisions} == {Reason.NO_ADDRESS}
    plan = select_channels(local, remote, policy=SelectionPolicy(allow_loopback=True, rss_connections=2))
    assert [(c.source_address, c.remote_address, c.connections) for c in plan.channels] == [
        ("127.0.0.1", "127.0.0.1", 2),
        ("127.0.0.2", "127.0.0.2", 2),
    ]
    kernel_lo = nic("lo", 1, "127.0.0.1/8", "::1/128", rss=False, queues=1, loopback=True)
    v6 = from_network_interface_info(server_info((7, 0, 1 * G, "::1")))
    assert select_channels([kernel_lo], v6).decision(Side.LOCAL, "lo").reason is Reason.LOOPBACK
    (pair,) = select_channels([kernel_lo], v6, policy=SelectionPolicy(allow_loopback=True)).channels
    assert (pair.source_address, pair.remote_address) == ("::1", "::1")
    assert addr("127.0.0.1/8").usable is False  # the policy does not change the inputs


# -- which connections a plan opens or retires --------------------------------------------------------


def pair(source: str, remote: str, connections: int, speed: int | None = 10 * G) -> ChannelPair:
    return ChannelPair(
        "eth", 1, source, "if", 1, remote, Transport.TCP, NicClass.RSS, connections, speed, speed
    )


def test_plan_changes_open_what_is_missing_and_retire_what_is_dropped() -> None:
    a, b, c = (
        pair("10.0.1.1", "10.0.1.2", 4),
        pair("10.0.2.1", "10.0.2.2", 4),
        pair("10.0.3.1", "10.0.3.2", 2),
    )
    ka, kb = ChannelKey.of(a), ChannelKey.of(b)
    first = plan_changes([a, b], {ka: 1})  # the first connection is one of a's
    assert first.open == ((a, 3), (b, 4)) and first.retire == ()
    assert plan_changes([a, b], {ka: 4, kb: 4}).empty
    later = plan_changes([a, c], {ka: 4, kb: 4})
    assert later.open == ((c, 2),) and later.retire == ((kb, 4),)
    fewer = plan_changes([pair("10.0.1.1", "10.0.1.2", 2)], {ka: 4})
    assert fewer.retire == ((ka, 2),) and fewer.open == ()
    capped = plan_changes([a, b, c], {}, limit=6)
    assert capped.open == ((a, 4), (b, 2))


def test_channel_key_normalizes_and_prints_ipv6_in_brackets() -> None:
    key = ChannelKey("::0001", "fd00:0::2")
    assert (key.source, key.remote) == ("::1", "fd00::2")
    assert str(key) == "[::1]->[fd00::2]"
    assert str(ChannelKey("198.18.1.1", "198.18.1.2")) == "198.18.1.1->198.18.1.2"
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ChannelKey("eth0", "10.0.0.1")


# -- spreading I/O in proportion to speed ----------------------------------------------------------


def test_scheduler_splits_bytes_in_proportion_to_speed_when_every_channel_is_busy() -> None:
    scheduler: ChannelScheduler[str] = ChannelScheduler()
    scheduler.add("fast", 10 * G)
    scheduler.add("slow", 1 * G)
    assert scheduler.weights == {"fast": 10, "slow": 1}
    picks = []
    for _ in range(110):  # nothing completes: the bytes in flight follow the weights
        picks.append(scheduler.pick(MiB))
        scheduler.started(picks[-1], MiB)
    assert picks.count("fast") == 100 and picks.count("slow") == 10


def test_scheduler_equal_speeds_round_robin_and_completion_frees_a_channel() -> None:
    scheduler: ChannelScheduler[str] = ChannelScheduler()
    for name in ("a", "b", "c"):
        scheduler.add(name, 25 * G)
    order = []
    for _ in range(6):
        channel = scheduler.pick(4 * MiB)
        scheduler.started(channel, 4 * MiB)
        order.append(channel)
    assert order == ["a", "b", "c", "a", "b", "c"]
    scheduler.finished("b", 4 * MiB)
    assert scheduler.pick(4 * MiB) == "b"  # the one that drained gets the next
    assert scheduler.sent("a") == 8 * MiB


def test_scheduler_unknown_speed_weighs_as_the_slowest_known_and_removal_reweighs() -> None:
    scheduler: ChannelScheduler[str] = ChannelScheduler()
    scheduler.add("x", 2 * G)
    scheduler.add("y", None)
    scheduler.add("z", 4 * G)
    assert scheduler.weights == {"x": 1, "y": 1, "z": 2}
    scheduler.started("z", 100)
    scheduler.remove("z")
    assert scheduler.weights == {"x": 1, "y": 1} and "z" not in scheduler
    scheduler.finished("z", 100)  # a request of a removed channel completing is ignored
    assert scheduler.pick(10, exclude=["x"]) == "y"
    scheduler.remove("x")
    scheduler.remove("y")
    with pytest.raises(LookupError):
        scheduler.pick()


@given(st.lists(st.integers(1, 100), min_size=1, max_size=8), st.integers(1, 400))
def test_scheduler_each_request_goes_where_it_would_finish_first(speeds: list[int], requests: int) -> None:
    """With nothing completing, every channel that got n requests had the lowest load after
    its last one: n_j / w_j <= (n_k + 1) / w_k for every other k. So the split follows the
    weights to within one request's worth of the slowest channel, and for many requests
    approaches split_by_weight's."""
    scheduler: ChannelScheduler[int] = ChannelScheduler()
    for i, speed in enumerate(speeds):
        scheduler.add(i, speed * G)
    weights = speed_weights([s * G for s in speeds])
    counts = [0] * len(speeds)
    for _ in range(requests):
        channel = scheduler.pick(1)
        scheduler.started(channel, 1)
        counts[channel] += 1
    assert sum(counts) == requests
    for j, (n_j, w_j) in enumerate(zip(counts, weights, strict=True)):
        for k, (n_k, w_k) in enumerate(zip(counts, weights, strict=True)):
            if j != k and n_j:
                assert n_j * w_k <= (n_k + 1) * w_j
    expected = split_by_weight(requests, weights)
    assert all(abs(c - e) <= max(weights) / min(weights) + 1 for c, e in zip(counts, expected, strict=True))


def test_connection_speeds_share_a_pairs_speed_among_its_connections() -> None:
    speeds = connection_speeds(
        [pair("10.0.1.1", "10.0.1.2", 4, 40 * G), pair("10.0.2.1", "10.0.2.2", 1, 10 * G)]
    )
    assert speeds == (10 * G,) * 5
    assert speed_weights(speeds) == (1,) * 5


# -- replay bookkeeping ------------------------------------------------------------------------------


def test_replay_book_hands_back_a_failed_channels_operations_oldest_first() -> None:
    book: ReplayBook[str, str] = ReplayBook()
    for op, channel in (("w1", "a"), ("w2", "b"), ("w3", "a"), ("w4", "a")):
        book.sent(channel, op)
    book.done("w3")
    assert book.inflight("a") == ("w1", "w4") and len(book) == 3
    assert book.channel_failed("a") == ["w1", "w4"]
    assert book.channel_of("w1") is None and book.inflight("a") == ()
    book.sent("b", "w1")  # replayed on b
    assert book.inflight("b") == ("w2", "w1")
    book.sent("c", "w1")  # replayed again elsewhere: it moves
    assert book.inflight("b") == ("w2",) and book.channel_of("w1") == "c"
    assert book.channel_failed("nowhere") == []


def test_replay_decision_and_retry_delays() -> None:
    assert (
        replay_decision(replayable=True, replays=0, channels_left=1, max_replays=8) is ReplayDecision.REPLAY
    )
    assert replay_decision(replayable=True, replays=0, channels_left=0, max_replays=8) is ReplayDecision.FAIL
    assert replay_decision(replayable=False, replays=0, channels_left=3, max_replays=8) is ReplayDecision.FAIL
    assert replay_decision(replayable=True, replays=8, channels_left=3, max_replays=8) is ReplayDecision.FAIL
    assert [retry_delay(n) for n in (1, 2, 3)] == [0.01, 0.02, 0.04]
    assert retry_delay(30) == 1.0
    with pytest.raises(ValueError, match="tries"):
        retry_delay(0)


def test_backoff_doubles_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    with pytest.raises(ValueError, match="initial"):
        Backoff(2.0, 1.0)


# -- the core: binding, ChannelSequence, replays ------------------------------------------------------


def second_connection(first: Pair, dialect: int) -> Pair:
    """Another connection to the same server (the server state shared, the ClientGuid too)."""
    server = ServerConnection(
        identity=ServerIdentity(b"S" * 16),
        authenticator_factory=first.server._auth_factory,
        initial_token=ServerAuthenticator.initial_token(),
        server=first.server.server,
    )
    client = ClientConnection(ClientConfig(dialects=(dialect,)), client_guid=GUID, server_name="srv")
    second = Pair(client, server, first.files)
    second.negotiate()
    return second


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UserDatabase:
    db = UserDatabase(tmp_path_factory.mktemp("mc-users") / "users.db")
    db.add_user("alice", PASSWORD)
    return db


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("dialect", [0x0311, 0x0302, 0x0300])
def test_binding_a_second_connection(users: UserDatabase, dialect: int, encrypted: bool) -> None:
    first = make_pair(users, (dialect,))
    first.negotiate()
    session = first.login(require_encryption=encrypted)
    tree = first.tree(session)
    second = second_connection(first, dialect)
    second.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    (event,) = second.pump()
    assert event == ChannelBound(session)
    assert set(session.channels) == {first.client, second.client}
    theirs = first.server.server.sessions[session.session_id]
    assert len(theirs.channels) == 2
    # The channel signs with a key of its own (3.0.x: from the binding's session key; 3.1.1:
    # also from this connection's pre-auth hash), which the server agrees on.
    assert session.channel(second.client).signing_key != session.channel(first.client).signing_key
    echo = second.call(
        lambda now: second.client.request(Command.ECHO, EMPTY4, session=session, tree=tree, now=now)
    )
    assert echo.status == NTStatus.SUCCESS and echo.request.verified
    assert bool(echo.header.flags & Flags.SIGNED) is not encrypted
    # The tree and the session are the same on both connections.
    create = CreateRequest(0x0012019F, 0, 7, 1, 0x40, "f.bin").encode()
    opened = second.call(
        lambda now: second.client.request(Command.CREATE, create, session=session, tree=tree, now=now)
    )
    assert opened.status == NTStatus.SUCCESS


def test_binding_requests_are_signed_with_the_session_key_and_carry_the_binding_flag(
    users: UserDatabase,
) -> None:
    first = make_pair(users, (0x0311,))
    first.negotiate()
    session = first.login()
    second = second_connection(first, 0x0311)
    second.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    ((pdu,),) = second.client.data_to_send()
    header = decode_header(bytes(pdu))
    assert header.command == Command.SESSION_SETUP and header.session_id == session.session_id
    assert header.flags & Flags.SIGNED
    assert bytes(pdu)[64 + 2] & 0x01  # SMB2_SESSION_FLAG_BINDING
    assert first.server_session(session).verify(bytes(pdu))


def test_binding_refused_leaves_the_session_alone(users: UserDatabase) -> None:
    first = make_pair(users, (0x0311,))
    first.negotiate()
    session = first.login()
    second = second_connection(first, 0x0311)
    second.client.bind_session(session, ClientAuthenticator("alice", "wrong"), 0.0)
    (event,) = second.pump()
    assert isinstance(event, BindingFailed) and event.status == NTStatus.LOGON_FAILURE
    assert session.state is SessionState.VALID and list(session.channels) == [first.client]
    with pytest.raises(LocalProtocolError):  # not a channel: no request of the session on it
        second.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    second.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    assert second.pump() == [ChannelBound(session)]


def test_binding_needs_what_the_first_channel_negotiated(users: UserDatabase) -> None:
    first = make_pair(users, (0x0311,))
    first.negotiate()
    session = first.login()
    other_dialect = second_connection(first, 0x0302)
    with pytest.raises(LocalProtocolError, match="dialect"):
        other_dialect.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    same = second_connection(first, 0x0311)
    same.client.server_guid = b"X" * 16  # another server
    with pytest.raises(LocalProtocolError, match="another server"):
        same.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    with pytest.raises(LocalProtocolError, match="already"):
        first.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)


def test_a_closed_connection_leaves_the_session_and_requests_carry_the_channel_sequence(
    users: UserDatabase,
) -> None:
    first = make_pair(users, (0x0311,))
    first.negotiate()
    session = first.login()
    tree = first.tree(session)
    second = second_connection(first, 0x0311)
    second.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    second.pump()
    before = second.call(lambda now: second.client.request(Command.ECHO, EMPTY4, session=session, now=now))
    assert before.request.channel_sequence == 0
    first.client.close()
    assert list(session.channels) == [second.client]
    assert session.bump_channel_sequence() == 1
    replayed = second.call(
        lambda now: second.client.request(
            Command.ECHO, EMPTY4, session=session, tree=tree, now=now, replay=True
        )
    )
    assert replayed.status == NTStatus.SUCCESS and replayed.request.channel_sequence == 1
    request = second.client.request(Command.ECHO, EMPTY4, session=session, now=0.0, replay=True)
    ((pdu,),) = second.client.data_to_send()
    header = decode_header(bytes(pdu))
    assert header.channel_sequence == 1 and header.flags & Flags.REPLAY_OPERATION
    assert request.replay
    session.channel_sequence = 0xFFFF
    assert session.bump_channel_sequence() == 0  # 16 bits, wrapping


def test_a_create_replayed_with_its_create_guid_gets_the_same_open(users: UserDatabase) -> None:
    """What the client relies on (Ferry's server, MS-SMB2 3.3.5.9.10): the CREATE's first try
    went down with its channel; the replay on another channel gets the open it made."""
    first = make_pair(users, (0x0311,))
    first.negotiate()
    session = first.login()
    tree = first.tree(session)
    second = second_connection(first, 0x0311)
    second.client.bind_session(session, ClientAuthenticator("alice", PASSWORD), 0.0)
    second.pump()
    dh2q = CreateContext(b"DH2Q", bytes(16) + random.randbytes(16))
    body = CreateRequest(0x0012019F, 0, 7, 5, 0x40, "replayed.bin", (dh2q,)).encode()
    first.client.request(Command.CREATE, body, session=session, tree=tree, now=0.0)
    for pieces in first.client.data_to_send():  # the server gets it; the answer is lost
        first.server.receive_pdu(b"".join(bytes(p) for p in pieces))
        for op in first.server.events():
            first.files.answer(first.server, op)
    first.server.data_to_send()
    first.client.close()
    session.bump_channel_sequence()
    again = second.call(
        lambda now: second.client.request(
            Command.CREATE, body, session=session, tree=tree, now=now, replay=True
        )
    )
    original = next(iter(first.server.server.opens.values()))
    assert again.status == NTStatus.SUCCESS
    assert again.expect(CreateResponse).file_id == original.file_id
    fresh = second.call(
        lambda now: second.client.request(Command.CREATE, body, session=session, tree=tree, now=now)
    )
    assert fresh.status == NTStatus.DUPLICATE_OBJECTID  # the same CreateGuid without the replay flag


# -- the asyncio session: replay on the surviving channels ----------------------------------------


@dataclass
class Files:
    """A file service whose READs take ``read_delay`` seconds, and whose WRITEs answer
    STATUS_FILE_NOT_AVAILABLE while ``unavailable`` says so (Samba's answer to a replay
    while older requests are still being processed)."""

    read_delay: float = 0.0
    write_delay: float = 0.0
    data: bytearray = field(default_factory=lambda: bytearray(range(256)) * 4096)
    unavailable: int = 0
    writes: list[tuple[int, int]] = field(default_factory=list)
    #: A directory: its names, two per QUERY_DIRECTORY, the enumeration's position per handle.
    names: tuple[str, ...] = ("a", "b", "c", "d", "e")
    listing_delay: float = 0.0
    positions: dict[int, int] = field(default_factory=dict)
    restarts: int = 0

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        request = op.request
        times = FileTimes(1, 2, 3, 4, len(self.data), len(self.data), 0x20)
        if op.command is Command.CREATE:
            return FileResult(NTStatus.SUCCESS, handle=object()), (CreateAction.OPENED, times)
        if isinstance(request, ReadRequest):
            await asyncio.sleep(self.read_delay)
            chunk = bytes(self.data[request.offset : request.offset + request.length])
            return FileResult(NTStatus.SUCCESS, read_head(len(chunk)) + chunk), None
        if isinstance(request, WriteRequest):
            await asyncio.sleep(self.write_delay)
            if self.unavailable:
                self.unavailable -= 1
                return FileResult(STATUS_FILE_NOT_AVAILABLE), None
            self.data[request.offset : request.offset + len(request.data)] = request.data
            self.writes.append((request.offset, len(request.data)))
            return FileResult(NTStatus.SUCCESS, encode_write_response(len(request.data))), None
        if isinstance(request, QueryDirectoryRequest):
            key = id(op.handle)
            if request.flags & QueryDirectoryFlags.RESTART_SCANS:
                self.positions[key] = 0
                self.restarts += 1
            at = self.positions.get(key, 0)
            self.positions[key] = at + 2  # it moves on, whether or not the answer arrives
            await asyncio.sleep(self.listing_delay if at else 0)
            chunk = self.names[at : at + 2]
            if not chunk:
                return FileResult(NTStatus.NO_MORE_FILES), None
            stat = FileStat(1, 2, 3, 4, 0, 10, FileAttributes.NORMAL, 7, 1, False, False)
            data, _ = encode_directory_entries(request.info_class, [(n, stat) for n in chunk], 65536)
            return FileResult(NTStatus.SUCCESS, encode_output_buffer_response(data)), None
        if isinstance(request, CloseRequest):
            return FileResult(NTStatus.SUCCESS, encode_close_response(0, None)), None
        return FileResult(NTStatus.NOT_SUPPORTED), None

    def release(self, handle: object) -> None:
        pass


@contextlib.asynccontextmanager
async def server_and_session(
    tmp: Path, files: Files, channels: int
) -> AsyncIterator[tuple[SMBServer, SMBSession]]:
    users = UserDatabase(tmp / "users.db")
    users.add_user("alice", PASSWORD)
    settings = ServerSettings(
        shares={"data": Share("data", path=str(tmp))},
        authenticator_factory=lambda: ServerAuthenticator(users),
        initial_token=ServerAuthenticator.initial_token(),
        files=files,
    )
    server = SMBServer(settings)
    ((_, port),) = await server.start("127.0.0.1", 0)
    guid = random.randbytes(16)
    clients = [await SMBClient.connect("127.0.0.1", port, client_guid=guid)]
    try:
        session = await clients[0].login("alice", PASSWORD)
        for _ in range(channels - 1):
            clients.append(await SMBClient.connect("127.0.0.1", port, client_guid=guid))
            await session.bind(clients[-1], speed=10 * G)
        yield server, session
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await server.close()


def kill(client: SMBClient) -> None:
    client._sock.shutdown(socket.SHUT_RDWR)


async def test_reads_in_flight_on_a_failed_channel_are_replayed_on_the_others(tmp_path: Path) -> None:
    files = Files(read_delay=0.3)
    async with server_and_session(tmp_path, files, 3) as (server, session):
        assert len(server.state.sessions[session.session_id].channels) == 3
        tree = await session.connect_tree("data")
        f = await tree.open("f.bin")
        reads = [asyncio.ensure_future(f.read(i * 65536, 65536)) for i in range(12)]
        await asyncio.sleep(0.1)
        victim = session.channels[1]
        assert session.inflight(victim) == 4  # spread evenly
        kill(victim)
        results = await asyncio.gather(*reads)
        assert results == [bytes(files.data[i * 65536 : (i + 1) * 65536]) for i in range(12)]
        assert session.replayed == 4 and session.channel_failures == 1
        assert session.session.channel_sequence == 1
        assert victim not in session.channels and len(session.channels) == 2
        assert len(server.state.sessions[session.session_id].channels) == 2  # the session lives on
        await f.close()


async def test_a_write_answered_file_not_available_after_a_failure_is_retried_as_a_replay(
    tmp_path: Path,
) -> None:
    files = Files(write_delay=0.2)
    async with server_and_session(tmp_path, files, 2) as (_, session):
        tree = await session.connect_tree("data")
        f = await tree.open("f.bin", "r+")
        keep = session.channels[0]
        victim = session.channels[1]
        write = asyncio.ensure_future(f.write(0, b"x" * 1000))  # goes to the first channel
        await asyncio.sleep(0.05)
        assert session.inflight(keep) == 1
        files.unavailable = 2  # the server saw a newer ChannelSequence meanwhile
        kill(victim)  # another channel fails: ChannelSequence 1
        assert await write == 1000
        assert session.retried == 2 and session.replayed == 0
        assert files.writes == [(0, 1000)] and files.data[:1000] == b"x" * 1000
        await f.close()


async def test_file_not_available_without_a_channel_failure_is_an_error(tmp_path: Path) -> None:
    files = Files(unavailable=1)
    async with server_and_session(tmp_path, files, 1) as (_, session):
        tree = await session.connect_tree("data")
        f = await tree.open("f.bin", "r+")
        with pytest.raises(SMBStatusError, match="0xC0000467"):
            await f.write(0, b"y")
        assert session.retried == 0


async def test_a_listing_whose_channel_fails_starts_again_and_misses_nothing(tmp_path: Path) -> None:
    """QUERY_DIRECTORY moves the enumeration on: its replay restarts it (RESTART_SCANS) and
    the client drops what it had, so no name is missed or listed twice."""
    files = Files(listing_delay=0.3)
    async with server_and_session(tmp_path, files, 2) as (_, session):
        tree = await session.connect_tree("data")
        listing = asyncio.ensure_future(tree.listdir("dir"))
        await asyncio.sleep(0.15)  # the second QUERY_DIRECTORY is being answered
        (busy,) = [c for c in session.channels if session.inflight(c)]
        kill(busy)
        assert await listing == ["a", "b", "c", "d", "e"]
        assert files.restarts == 2 and session.replayed == 1


async def test_with_one_channel_a_failure_fails_what_is_in_flight(tmp_path: Path) -> None:
    files = Files(read_delay=0.3)
    async with server_and_session(tmp_path, files, 1) as (_, session):
        tree = await session.connect_tree("data")
        f = await tree.open("f.bin")
        read = asyncio.ensure_future(f.read(0, 100))
        await asyncio.sleep(0.1)
        kill(session.client)
        with pytest.raises(ConnectionLost):
            await read
        assert session.replayed == 0 and not session.channels
        with pytest.raises(ConnectionLost):
            await f.read(0, 100)


async def test_binding_with_a_wrong_password_is_a_logon_failure(tmp_path: Path) -> None:
    async with server_and_session(tmp_path, Files(), 1) as (server, session):
        port = next(iter(server._servers)).sockets[0].getsockname()[1]
        other = await SMBClient.connect("127.0.0.1", port, client_guid=session.client.conn.client_guid)
        try:
            with pytest.raises(LogonFailure):
                await other.bind(session.session, "wrong")
            assert len(session.channels) == 1
        finally:
            await other.close()


def test_responses_keep_their_request() -> None:
    assert Response.__slots__  # the replay checks read response.request.replay
