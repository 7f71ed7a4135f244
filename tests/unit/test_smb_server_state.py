"""The server-wide state of the sans-IO core, driven in memory: session binding over several
connections (Multichannel, MS-SMB2 3.3.5.5.2), a channel lost while the session lives on,
PreviousSessionId, interim responses and CANCEL, and oplocks granted, broken and
acknowledged across connections."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from smbcore import crypto
from smbcore.auth import ClientAuthenticator, ServerAuthenticator, UserDatabase
from smbcore.config import ServerLimits
from smbcore.fileops import (
    CloseRequest,
    CreateContext,
    CreateRequest,
    CreateResponse,
    FileTimes,
    WriteRequest,
)
from smbcore.header import Command, Flags, Header, decode_header
from smbcore.messages import EMPTY4, SessionSetupRequest, SessionSetupResponse, ShareType, TreeConnectRequest
from smbcore.negotiate import Dialect
from smbcore.ntstatus import NTStatus
from smbcore.oplocks import NOTIFICATION_MESSAGE_ID, OplockBreak, OplockLevel
from smbcore.server import (
    CancelOperation,
    FileOperation,
    FileResult,
    RequestRecord,
    ServerConnection,
    ServerIdentity,
    ServerState,
    Share,
)

from tests.unit.test_smb_server_core import MiniClient, sent

PASSWORD = "Pa55-word!"
BINDING = 0x01


@pytest.fixture
def users(tmp_path: Path) -> UserDatabase:
    db = UserDatabase(tmp_path / "users.db")
    db.add_user("alice", PASSWORD)
    db.add_user("bob", "B0b-password")
    return db


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def connection(state: ServerState, users: UserDatabase, **kwargs: object) -> ServerConnection:
    if not state.shares:
        state.add_share(Share("data"))
        state.add_share(Share("IPC$", ShareType.PIPE))
    return ServerConnection(
        identity=ServerIdentity(b"S" * 16),
        authenticator_factory=lambda: ServerAuthenticator(users),
        initial_token=ServerAuthenticator.initial_token(),
        server=state,
        **kwargs,  # type: ignore[arg-type]
    )


def bind(first: MiniClient, second: MiniClient, user: str = "alice", password: str = PASSWORD) -> Header:
    """Bind ``second``'s connection to ``first``'s session, as a Multichannel client does."""
    assert first.signer is not None and first.keys is not None
    second.session_id, second.signer, second.keys = first.session_id, first.signer, first.keys
    auth = ClientAuthenticator(user, password)
    token = auth.step(None)
    channel_hash = second.preauth.copy()
    while True:
        request = SessionSetupRequest(BINDING, 1, 0, 0, token).encode()
        header, pdu = second.send(Command.SESSION_SETUP, request, sign=True)
        if second.dialect == Dialect.SMB_3_1_1:
            channel_hash.update(second.last_request)
        if header.status != NTStatus.MORE_PROCESSING_REQUIRED:
            break
        assert header.flags & Flags.SIGNED and first.signer.verify(pdu)  # Session.SigningKey
        if second.dialect == Dialect.SMB_3_1_1:
            channel_hash.update(pdu)
        token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
    if header.status == NTStatus.SUCCESS:
        keys = crypto.derive_session_keys(
            auth.session_key,
            second.dialect,
            channel_hash.value if second.dialect == Dialect.SMB_3_1_1 else None,
            second.cipher if second.dialect == Dialect.SMB_3_1_1 else None,
        )
        second.signer = crypto.make_signer(second.algorithm, keys.signing_key)
        assert header.flags & Flags.SIGNED and second.signer.verify(pdu), "signed with the channel's key"
    return header


def tree_connect(client: MiniClient) -> int:
    header, _ = client.send(Command.TREE_CONNECT, TreeConnectRequest(0, r"\\s\data").encode(), sign=True)
    assert header.status == NTStatus.SUCCESS
    return header.tree_id


@pytest.mark.parametrize("dialect", [0x0311, 0x0302, 0x0300])
def test_a_second_connection_binds_to_the_session(users: UserDatabase, dialect: int) -> None:
    state = ServerState()
    first, second = MiniClient(connection(state, users)), MiniClient(connection(state, users))
    first.negotiate((dialect,))
    first.login("alice", PASSWORD)
    second.negotiate((dialect,))
    assert bind(first, second).status == NTStatus.SUCCESS
    session = state.sessions[first.session_id]
    assert len(session.channels) == 2
    # Each channel signs with its own key; both reach the same session and trees.
    tree = tree_connect(first)
    header, pdu = second.send(Command.ECHO, EMPTY4, sign=True, tree_id=tree)
    assert header.status == NTStatus.SUCCESS and second.signer is not None and second.signer.verify(pdu)
    assert first.signer is not None and not first.signer.verify(pdu)


def test_binding_refusals(users: UserDatabase) -> None:
    state = ServerState()
    first = MiniClient(connection(state, users))
    first.negotiate((0x0311,))
    first.login("alice", PASSWORD)
    # Unknown session.
    lost = MiniClient(connection(state, users))
    lost.negotiate((0x0311,))
    lost.session_id = 0x999
    header, _ = lost.send(Command.SESSION_SETUP, SessionSetupRequest(BINDING, 1, 0, 0, b"x").encode())
    assert header.status == NTStatus.USER_SESSION_DELETED
    # Not signed.
    unsigned = MiniClient(connection(state, users))
    unsigned.negotiate((0x0311,))
    unsigned.session_id = first.session_id
    header, _ = unsigned.send(Command.SESSION_SETUP, SessionSetupRequest(BINDING, 1, 0, 0, b"x").encode())
    assert header.status == NTStatus.INVALID_PARAMETER
    # To or from AES-GMAC signing (this session signs with GMAC), as Windows answers.
    cmac = MiniClient(connection(state, users))
    cmac.negotiate((0x0311,), signing=(1,))
    assert bind(first, cmac).status == NTStatus.REQUEST_OUT_OF_SEQUENCE
    old_dialect = MiniClient(connection(state, users))
    old_dialect.negotiate((0x0302,))
    assert bind(first, old_dialect).status == NTStatus.REQUEST_OUT_OF_SEQUENCE
    # A CMAC session: a GMAC channel is refused, an HMAC one is fine, another dialect is not.
    second = MiniClient(connection(state, users))
    second.negotiate((0x0311,), signing=(1,))
    second.login("alice", PASSWORD)
    gmac = MiniClient(connection(state, users))
    gmac.negotiate((0x0311,))
    assert bind(second, gmac).status == NTStatus.NOT_SUPPORTED
    hmac = MiniClient(connection(state, users))
    hmac.negotiate((0x0311,), signing=(0,))
    assert bind(second, hmac).status == NTStatus.SUCCESS
    other_dialect = MiniClient(connection(state, users))
    other_dialect.negotiate((0x0302,))
    assert bind(second, other_dialect).status == NTStatus.INVALID_PARAMETER
    other_cipher = MiniClient(connection(state, users))
    other_cipher.negotiate((0x0311,), ciphers=(1,), signing=(1,))
    assert bind(second, other_cipher).status == NTStatus.INVALID_PARAMETER
    # Another user.
    bob = MiniClient(connection(state, users))
    bob.negotiate((0x0311,))
    assert bind(first, bob, "bob", "B0b-password").status == NTStatus.ACCESS_DENIED
    # A wrong password: the binding fails, the session is untouched.
    wrong = MiniClient(connection(state, users))
    wrong.negotiate((0x0311,))
    assert bind(first, wrong, password="nope").status == NTStatus.LOGON_FAILURE
    assert first.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.SUCCESS
    assert len(state.sessions[first.session_id].channels) == 1


def test_channel_limit(users: UserDatabase) -> None:
    state = ServerState()
    limits = ServerLimits(max_channels=2)
    first = MiniClient(connection(state, users, limits=limits))
    first.negotiate((0x0311,))
    first.login("alice", PASSWORD)
    second = MiniClient(connection(state, users, limits=limits))
    second.negotiate((0x0311,))
    assert bind(first, second).status == NTStatus.SUCCESS
    third = MiniClient(connection(state, users, limits=limits))
    third.negotiate((0x0311,))
    assert bind(first, third).status == NTStatus.INSUFFICIENT_RESOURCES


@dataclass
class Shell:
    """The shell's side for these tests: files are names, the key of a file is its name."""

    conn: ServerConnection
    state: ServerState
    handles: itertools.count[int] = field(default_factory=itertools.count)
    released: list[object] = field(default_factory=list)

    def run_events(self) -> list[FileOperation]:
        """Carry out every CREATE/CLOSE/WRITE at once; return the others, unanswered."""
        held = []
        for event in self.conn.events():
            if isinstance(event, CancelOperation):
                self.conn.complete(event.op_id, FileResult(NTStatus.CANCELLED))
            elif event.command is Command.CREATE:
                assert isinstance(event.request, CreateRequest)
                key: Hashable = event.request.name
                if key in event.break_keys:
                    self.conn.complete(
                        event.op_id, FileResult(NTStatus.OPLOCK_BREAK_IN_PROGRESS, file_key=key)
                    )
                else:
                    handle = next(self.handles)
                    result = FileResult(NTStatus.SUCCESS, handle=handle, file_key=key)
                    self.conn.complete(event.op_id, result, (1, FileTimes()))
            elif event.command in (Command.CLOSE, Command.WRITE):
                self.conn.complete(event.op_id, FileResult(NTStatus.SUCCESS, b"\x10\x00" + bytes(14)))
            else:
                held.append(event)
        self.released += self.state.handles_to_close()
        return held


def open_file(
    client: MiniClient, shell: Shell, tree: int, name: str, oplock: int, disposition: int = 1
) -> Header:
    request = CreateRequest(0x0012019F, 0, 7, disposition, 0, name, oplock_level=oplock).encode()
    client.server.receive_pdu(_signed(client, Command.CREATE, request, tree))
    shell.run_events()
    return _responses(client)[-1][0]


def _signed(
    client: MiniClient, command: Command, body: bytes, tree: int, *, message_id: int | None = None
) -> bytes:
    mid = client.message_id if message_id is None else message_id
    header = Header(command=command, credits=8, message_id=mid, reserved_or_async=Header.sync_field(tree),
                    session_id=client.session_id)  # fmt: skip
    msg = bytearray(header.to_bytes() + body)
    assert client.signer is not None
    client.signer.sign_in_place(msg)
    client.message_id = mid + 1
    return bytes(msg)


def _responses(client: MiniClient) -> list[tuple[Header, bytes]]:
    return [(decode_header(pdu), pdu) for pdu in sent(client.server)]


def logged_in(state: ServerState, users: UserDatabase) -> tuple[MiniClient, Shell, int]:
    client = MiniClient(connection(state, users))
    client.negotiate((0x0311,))
    client.login("alice", PASSWORD)
    return client, Shell(client.server, state), tree_connect(client)


def test_batch_oplock_is_broken_for_a_second_open_and_the_create_waits(users: UserDatabase) -> None:
    clock = Clock()
    state = ServerState(clock=clock)
    holder, holder_shell, holder_tree = logged_in(state, users)
    other, other_shell, other_tree = logged_in(state, users)
    first = open_file(holder, holder_shell, holder_tree, "f.txt", OplockLevel.BATCH)
    assert first.status == NTStatus.SUCCESS
    file_id = state.opens[next(iter(state.opens))].file_id
    assert state.opens[file_id].oplock == OplockLevel.BATCH
    # The second open is held: an interim STATUS_PENDING goes to its client, a break to the holder.
    request = CreateRequest(0x0012019F, 0, 7, 1, 0, "f.txt", oplock_level=OplockLevel.BATCH).encode()
    other.server.receive_pdu(_signed(other, Command.CREATE, request, other_tree))
    other_shell.run_events()
    ((interim, _),) = _responses(other)
    assert interim.status == NTStatus.PENDING and interim.flags & Flags.ASYNC_COMMAND and interim.async_id
    ((notification, body),) = _responses(holder)
    assert notification.command == Command.OPLOCK_BREAK and notification.message_id == NOTIFICATION_MESSAGE_ID
    assert not notification.flags & Flags.SIGNED
    brk = OplockBreak.parse(body)
    assert brk.file_id == file_id and brk.oplock_level == OplockLevel.LEVEL_II
    # The holder acknowledges Level II; the waiting CREATE is handed to the shell again and
    # completes with Level II for both.
    ack = OplockBreak(24, OplockLevel.LEVEL_II, 0, 0, file_id).to_bytes()
    holder.server.receive_pdu(_signed(holder, Command.OPLOCK_BREAK, ack, holder_tree))
    ((ack_response, ack_body),) = _responses(holder)
    assert (
        ack_response.status == NTStatus.SUCCESS
        and OplockBreak.parse(ack_body).oplock_level == OplockLevel.LEVEL_II
    )
    other_shell.run_events()
    ((final, final_body),) = _responses(other)
    assert final.status == NTStatus.SUCCESS and final.async_id == interim.async_id and final.credits == 0
    assert final_body[64 + 2] == OplockLevel.LEVEL_II
    # A write through the first open breaks the other's Level II to none, without waiting.
    assert state.opens[file_id].oplock == OplockLevel.LEVEL_II
    write = WriteRequest(0, file_id, memoryview(b"abc")).encode_head() + b"abc"
    holder.server.receive_pdu(_signed(holder, Command.WRITE, write, holder_tree))
    holder_shell.run_events()
    ((notification, body),) = _responses(other)
    assert (
        notification.command == Command.OPLOCK_BREAK
        and OplockBreak.parse(body).oplock_level == OplockLevel.NONE
    )


def test_an_unacknowledged_break_times_out(users: UserDatabase) -> None:
    clock = Clock()
    state = ServerState(clock=clock, oplock_break_timeout=35.0)
    holder, holder_shell, holder_tree = logged_in(state, users)
    other, other_shell, other_tree = logged_in(state, users)
    open_file(holder, holder_shell, holder_tree, "f.txt", OplockLevel.EXCLUSIVE)
    request = CreateRequest(0x0012019F, 0, 7, 5, 0, "f.txt").encode()  # OVERWRITE_IF: break to none
    other.server.receive_pdu(_signed(other, Command.CREATE, request, other_tree))
    other_shell.run_events()
    _responses(other)
    ((_, body),) = _responses(holder)
    assert OplockBreak.parse(body).oplock_level == OplockLevel.NONE
    assert state.next_deadline() == 35.0
    clock.now = 35.0
    state.handle_timer(clock.now)
    other_shell.run_events()
    ((final, _),) = _responses(other)
    assert final.status == NTStatus.SUCCESS
    assert state.next_deadline() is None


def test_cancel_of_a_create_held_for_a_break(users: UserDatabase) -> None:
    state = ServerState()
    holder, holder_shell, holder_tree = logged_in(state, users)
    other, other_shell, other_tree = logged_in(state, users)
    open_file(holder, holder_shell, holder_tree, "f.txt", OplockLevel.BATCH)
    request = CreateRequest(0x0012019F, 0, 7, 1, 0, "f.txt").encode()
    other.server.receive_pdu(_signed(other, Command.CREATE, request, other_tree))
    other_shell.run_events()
    ((interim, _),) = _responses(other)
    cancel = Header(command=Command.CANCEL, flags=Flags.ASYNC_COMMAND, reserved_or_async=interim.async_id,
                    message_id=interim.message_id, session_id=other.session_id)  # fmt: skip
    other.server.receive_pdu(cancel.to_bytes() + EMPTY4)
    ((final, _),) = _responses(other)
    assert final.status == NTStatus.CANCELLED and final.async_id == interim.async_id


def test_an_operation_that_waits_goes_async_and_can_be_cancelled(users: UserDatabase) -> None:
    state = ServerState()
    client, shell, tree = logged_in(state, users)
    open_file(client, shell, tree, "f.txt", 0)
    file_id = next(iter(state.opens))
    flush = bytes.fromhex("1800") + bytes(6) + file_id
    client.server.receive_pdu(_signed(client, Command.FLUSH, flush, tree))
    (held,) = shell.run_events()
    assert client.server.go_async(held.op_id)
    ((interim, _),) = _responses(client)
    assert interim.status == NTStatus.PENDING and interim.credits > 0 and not interim.flags & Flags.SIGNED
    assert not client.server.go_async(held.op_id)  # only once
    # A sync-form CANCEL names the request by MessageId (the client may not have seen the
    # interim response yet); the shell is asked to stop it.
    cancel = Header(command=Command.CANCEL, message_id=interim.message_id, session_id=client.session_id)
    client.server.receive_pdu(cancel.to_bytes() + EMPTY4)
    assert client.server.events() == [CancelOperation(held.op_id)]
    cancel = Header(command=Command.CANCEL, flags=Flags.ASYNC_COMMAND, reserved_or_async=interim.async_id,
                    session_id=client.session_id)  # fmt: skip
    client.server.receive_pdu(cancel.to_bytes() + EMPTY4)
    assert client.server.events() == [CancelOperation(held.op_id)]  # the async form finds it too
    client.server.complete(held.op_id, FileResult(NTStatus.CANCELLED))
    ((final, pdu),) = _responses(client)
    assert final.status == NTStatus.CANCELLED and final.credits == 0 and final.flags & Flags.SIGNED
    assert client.signer is not None and client.signer.verify(pdu)


def test_losing_one_channel_keeps_the_session_and_its_opens(users: UserDatabase) -> None:
    state = ServerState()
    first = MiniClient(connection(state, users))
    first.negotiate((0x0311,))
    first.login("alice", PASSWORD)
    second = MiniClient(connection(state, users))
    second.negotiate((0x0311,))
    bind(first, second)
    shell = Shell(first.server, state)
    tree = tree_connect(first)
    open_file(first, shell, tree, "f.txt", 0)
    (file_id,) = state.opens
    first.server.connection_lost()
    assert state.opens and first.session_id in state.sessions
    # The open is reachable on the surviving channel.
    close = CloseRequest(24, 0, 0, file_id).to_bytes()
    second.server.receive_pdu(_signed(second, Command.CLOSE, close, tree))
    Shell(second.server, state).run_events()
    ((closed, _),) = _responses(second)
    assert closed.status == NTStatus.SUCCESS and not state.opens
    # The last channel going ends the session.
    second.server.connection_lost()
    assert first.session_id not in state.sessions


def test_logoff_on_one_channel_ends_the_session_on_all(users: UserDatabase) -> None:
    state = ServerState()
    first, shell, tree = logged_in(state, users)
    second = MiniClient(connection(state, users))
    second.negotiate((0x0311,))
    bind(first, second)
    open_file(first, shell, tree, "f.txt", 0)
    assert second.send(Command.LOGOFF, EMPTY4, sign=True)[0].status == NTStatus.SUCCESS
    assert first.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.USER_SESSION_DELETED
    assert not state.opens and state.handles_to_close() == [0]


def test_previous_session_id_ends_the_old_session(users: UserDatabase) -> None:
    state = ServerState()
    old, shell, tree = logged_in(state, users)
    open_file(old, shell, tree, "f.txt", OplockLevel.BATCH)
    new = MiniClient(connection(state, users))
    new.negotiate((0x0311,))
    auth = ClientAuthenticator("alice", PASSWORD)
    token = auth.step(None)
    while True:
        request = SessionSetupRequest(0, 1, 0, old.session_id, token).encode()
        header, pdu = new.send(Command.SESSION_SETUP, request)
        new.session_id = header.session_id
        if header.status != NTStatus.MORE_PROCESSING_REQUIRED:
            break
        token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
    assert header.status == NTStatus.SUCCESS
    assert old.session_id not in state.sessions and not state.opens


def test_binding_on_an_smb2_connection_is_not_accepted(users: UserDatabase) -> None:
    state = ServerState()
    first = MiniClient(connection(state, users))
    first.negotiate((0x0311,), signing=(1,))
    first.login("alice", PASSWORD)
    old = MiniClient(connection(state, users))
    old.negotiate((0x0210,))
    assert bind(first, old).status == NTStatus.REQUEST_NOT_ACCEPTED


def test_session_deleted_keeps_the_signed_flag(users: UserDatabase) -> None:
    state = ServerState()
    client = MiniClient(connection(state, users))
    client.negotiate((0x0311,))
    client.login("alice", PASSWORD)
    assert client.send(Command.LOGOFF, EMPTY4, sign=True)[0].status == NTStatus.SUCCESS
    header, _ = client.send(Command.ECHO, EMPTY4, sign=True)
    assert header.status == NTStatus.USER_SESSION_DELETED and header.flags & Flags.SIGNED
    header, _ = client.send(Command.ECHO, EMPTY4)
    assert header.status == NTStatus.USER_SESSION_DELETED and not header.flags & Flags.SIGNED


def test_a_replayed_create_gets_the_open_its_first_try_made(users: UserDatabase) -> None:
    state = ServerState()
    client, shell, tree = logged_in(state, users)
    guid = bytes(range(1, 17))
    dh2q = CreateContext(b"DH2Q", bytes(16) + guid)
    request = CreateRequest(0x0012019F, 0, 7, 2, 0, "f.txt", (dh2q,)).encode()
    client.server.receive_pdu(_signed(client, Command.CREATE, request, tree))
    shell.run_events()
    ((first, first_body),) = _responses(client)
    assert first.status == NTStatus.SUCCESS
    # The replay (as a client sends it on another channel after losing the first) is answered
    # from the table: same FileId, nothing reaches the shell, no second open.
    replay = bytearray(_signed(client, Command.CREATE, request, tree))
    flags = int.from_bytes(replay[16:20], "little") | Flags.REPLAY_OPERATION
    replay[16:20] = flags.to_bytes(4, "little")
    assert client.signer is not None
    client.signer.sign_in_place(replay)
    client.server.receive_pdu(bytes(replay))
    assert client.server.events() == []
    ((again, again_body),) = _responses(client)
    assert again.status == NTStatus.SUCCESS and again_body[64:] == first_body[64:]
    assert len(state.opens) == 1
    # Reusing the CreateGuid without the replay flag is refused.
    client.server.receive_pdu(_signed(client, Command.CREATE, request, tree))
    ((dup, _),) = _responses(client)
    assert dup.status == NTStatus.DUPLICATE_OBJECTID


def test_shares_added_and_removed_at_run_time(users: UserDatabase) -> None:
    state = ServerState(shares={"data": Share("data")})
    client, shell, tree = logged_in(state, users)
    open_file(client, shell, tree, "f.txt", 0)
    path = TreeConnectRequest(0, r"\\s\vm1$").encode()
    assert client.send(Command.TREE_CONNECT, path, sign=True)[0].status == NTStatus.BAD_NETWORK_NAME
    state.add_share(Share("vm1$", hidden=True))
    header, _ = client.send(Command.TREE_CONNECT, path, sign=True)
    assert header.status == NTStatus.SUCCESS
    hidden_tree = header.tree_id
    open_file(client, shell, hidden_tree, "disk.qcow2", 0)
    assert len(state.opens) == 2
    assert state.remove_share("VM1$") is not None
    assert len(state.opens) == 1 and state.handles_to_close()  # its opens closed, the other kept
    header, _ = client.send(Command.ECHO, EMPTY4, sign=True, tree_id=hidden_tree)
    close = CloseRequest(24, 0, 0, bytes(16)).to_bytes()
    client.server.receive_pdu(_signed(client, Command.CLOSE, close, hidden_tree))
    ((gone, _),) = _responses(client)
    assert gone.status == NTStatus.NETWORK_NAME_DELETED
    assert client.server.bytes_received > 0 and client.server.bytes_sent > 0


def test_a_malformed_request_body_is_refused_and_the_connection_carries_on(users: UserDatabase) -> None:
    state = ServerState()
    client, _, tree = logged_in(state, users)
    no_locks = (48).to_bytes(2, "little") + (0).to_bytes(2, "little") + bytes(20)  # LockCount 0
    client.server.receive_pdu(_signed(client, Command.LOCK, no_locks, tree))
    ((refused, _),) = _responses(client)
    assert refused.status == NTStatus.INVALID_PARAMETER
    assert client.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.SUCCESS


def test_maximal_access_is_answered_and_a_write_breaks_every_level_two(users: UserDatabase) -> None:
    state = ServerState()
    client, shell, tree = logged_in(state, users)
    mxac = CreateContext(b"MxAc", b"")
    request = CreateRequest(
        0x0012019F, 0, 7, 2, 0, "f.txt", (mxac,), oplock_level=OplockLevel.LEVEL_II
    ).encode()
    client.server.receive_pdu(_signed(client, Command.CREATE, request, tree))
    shell.run_events()
    ((created, body),) = _responses(client)
    response = CreateResponse.decode(body)
    assert created.status == NTStatus.SUCCESS and response.oplock_level == OplockLevel.LEVEL_II
    assert [(c.name, c.data[4:]) for c in response.contexts] == [
        (b"MxAc", (0x001F01FF).to_bytes(4, "little"))
    ]
    # The writer's own Level II goes to none too (MS-FSA: a write breaks every Level II).
    write = WriteRequest(0, response.file_id, memoryview(b"abc")).encode_head() + b"abc"
    client.server.receive_pdu(_signed(client, Command.WRITE, write, tree))
    shell.run_events()
    notification, written = _responses(client)
    assert notification[0].command == Command.OPLOCK_BREAK
    assert OplockBreak.parse(notification[1]).oplock_level == OplockLevel.NONE
    assert written[0].status == NTStatus.SUCCESS


def test_answered_requests_are_recorded_and_a_session_can_be_closed(users: UserDatabase) -> None:
    clock = Clock()
    state = ServerState(clock=clock)
    records: list[RequestRecord] = []
    state.on_request = records.append
    client, shell, tree = logged_in(state, users)
    open_file(client, shell, tree, "f.txt", 0)
    assert [r.command for r in records][-2:] == [Command.TREE_CONNECT, Command.CREATE]
    create = records[-1]
    assert create.status == NTStatus.SUCCESS and create.share == "data" and create.connection is client.server
    assert create.session_id == client.session_id and create.response_bytes > 0
    assert state.close_session(client.session_id) and not state.close_session(client.session_id)
    assert (
        not state.opens
        and client.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.USER_SESSION_DELETED
    )


def test_a_write_with_an_older_channel_sequence_is_refused(users: UserDatabase) -> None:
    state = ServerState()
    client, shell, tree = logged_in(state, users)
    open_file(client, shell, tree, "f.txt", 0)
    (file_id,) = state.opens

    def write(sequence: int) -> int:
        header = Header(command=Command.WRITE, credits=8, message_id=client.message_id, status=sequence,
                        reserved_or_async=Header.sync_field(tree), session_id=client.session_id)  # fmt: skip
        msg = bytearray(header.to_bytes() + WriteRequest(0, file_id, memoryview(b"x")).encode_head() + b"x")
        assert client.signer is not None
        client.signer.sign_in_place(msg)
        client.message_id += 1
        client.server.receive_pdu(bytes(msg))
        shell.run_events()
        return _responses(client)[-1][0].status

    assert write(0) == NTStatus.SUCCESS
    assert write(1) == NTStatus.SUCCESS  # the client moved on after a channel failure
    assert write(0) == NTStatus.FILE_NOT_AVAILABLE  # late, from the old channel
    assert write(1) == NTStatus.SUCCESS


def test_a_replay_waits_for_the_requests_from_before_the_move(users: UserDatabase) -> None:
    """MS-SMB2 3.3.5.2.10: a WRITE still running with the old ChannelSequence holds back a
    replay (STATUS_FILE_NOT_AVAILABLE, the client tries again) until it is answered."""
    state = ServerState()
    client, shell, tree = logged_in(state, users)
    open_file(client, shell, tree, "f.txt", 0)
    (file_id,) = state.opens

    def send_write(sequence: int, *, replay: bool = False) -> int:
        header = Header(command=Command.WRITE, credits=8, message_id=client.message_id, status=sequence,
                        flags=Flags.REPLAY_OPERATION if replay else Flags(0),
                        reserved_or_async=Header.sync_field(tree), session_id=client.session_id)  # fmt: skip
        msg = bytearray(header.to_bytes() + WriteRequest(0, file_id, memoryview(b"x")).encode_head() + b"x")
        assert client.signer is not None
        client.signer.sign_in_place(msg)
        mid = client.message_id
        client.message_id += 1
        client.server.receive_pdu(bytes(msg))
        return mid

    def answer(ops: list[FileOperation]) -> list[int]:
        for op in ops:
            client.server.complete(op.op_id, FileResult(NTStatus.SUCCESS, b"\x10\x00" + bytes(14)))
        return [h.status for h, _ in _responses(client)]

    send_write(0)
    (old,) = client.server.events()  # running on the file, not answered yet (the channel died)
    send_write(1)  # the client moved to 1 on another channel: this one runs
    (moved,) = client.server.events()
    assert answer([moved]) == [NTStatus.SUCCESS]
    send_write(1, replay=True)  # the old one's replay: held back, the old write still runs
    assert client.server.events() == [] and answer([]) == [NTStatus.FILE_NOT_AVAILABLE]
    assert answer([old]) == [NTStatus.SUCCESS]
    send_write(1, replay=True)  # nothing from before runs any more
    (replayed,) = client.server.events()
    assert answer([replayed]) == [NTStatus.SUCCESS]
    opened = state.opens[file_id]
    assert opened.outstanding_requests == opened.outstanding_pre_requests == 0
